"""The pure half of alerting (SPEC section 6): `rules` turns detector output into
`vigo.alert/1` records with deterministic ids, `mail` renders them as messages. No Faust,
no I/O: the outbox writer and the SMTP sender live in the shell (`processor`)."""
