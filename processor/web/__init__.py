"""The HTTP side of the worker: the JSON API, the dashboard pages and their static files.

- `documents`: the pure JSON documents and query parsing;
- `cluster`: who owns what, and forwarding to the other workers;
- `views`: the Faust views, the dashboard pages and `register_web`.
"""
