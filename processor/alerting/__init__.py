"""The shell of alerting: the outbox writer (`outbox.py`) and the SMTP sender (`sender.py`).
The rules, ids and mail text are pure, in the top-level `alerts` package."""
