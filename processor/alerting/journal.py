"""The sender's mail journal behind `GET /api/alerts`: the rules are in `alerts.journal`,
the entries in the `alerts-journal` table (one partition, one key per alert id).

Writes are held (`processor.state.HeldTable`) and reach the table when the sender
flushes, which it does before every SMTP attempt: so the journal of the worker that owns
the outbox, and of the one that takes it over, shows a mail in progress while it is retried.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alerts import journal
from processor.records import decode_journal_entry, encode_journal_entry
from processor.state import HeldTable
from topics.events import Alert
from topics.timestamps import iso_from_ms

#: The outbox, and so every sender table, has one partition.
PARTITION = 0


class MailJournal:
    """Each mail's progress: pending from the first attempt, then sent or rejected."""

    def __init__(self, table: HeldTable, clock: Callable[[], float]) -> None:
        self.table = table
        self.clock = clock

    def entries(self) -> list[journal.Entry]:
        return [decode_journal_entry(v) for _, v in self.table.items() if v is not None]

    def _put(self, entry: journal.Entry) -> None:
        self.table.put(PARTITION, entry.alert_id.encode("utf-8"), encode_journal_entry(entry))

    def entry(self, alert: Alert) -> journal.Entry:
        """The alert's entry; a new pending one (the oldest beyond the cap pruned) if
        there is none."""
        raw = self.table.get(alert.alert_id.encode("utf-8"))
        if raw is not None:
            return decode_journal_entry(raw)
        entries = self.entries()
        entry = journal.started(entries, alert.alert_id, alert.event, alert.at)
        self._put(entry)
        for old in journal.to_prune([*entries, entry]):
            self.table.put(PARTITION, old.encode("utf-8"), None)
        return entry

    def attempted(self, alert: Alert) -> None:
        self._put(journal.attempted(self.entry(alert)))

    def finished(self, alert: Alert, outcome: journal.Outcome) -> None:
        now = iso_from_ms(int(self.clock() * 1000))
        self._put(journal.finished(self.entry(alert), outcome, now))

    def doc(self) -> dict[str, Any]:
        return journal.alerts_doc(self.entries())
