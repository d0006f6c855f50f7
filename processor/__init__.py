"""The Faust shell: configuration, the app and its agents, timers, web views and CLIs."""
