"""The HTTP side of the worker: the JSON API, the dashboard pages and their static files."""
