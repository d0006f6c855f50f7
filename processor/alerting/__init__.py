"""The shell of alerting: the outbox writer (`outbox.py`) and the SMTP sender (`sender.py`,
composing `smtp.py`: one mail with retries and backoff, `windows.py`: the stale digest
windows, and `journal.py`: each mail's progress for `GET /api/alerts`). The rules, ids and
mail text are pure, in the top-level `alerts` package."""
