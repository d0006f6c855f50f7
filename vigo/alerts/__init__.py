"""Alerts (SPEC section 6): rules that turn detector output into outbox records with
deterministic ids (`rules`), the outbox writer (`outbox`), mail rendering (`mail`), and the
SMTP sender agent (`sender`); `wiring.register_alerts` plugs them into the app.

`rules` and `mail` are pure (no Faust, no I/O) so they can be tested in isolation.
"""
