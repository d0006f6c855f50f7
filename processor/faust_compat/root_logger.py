"""`quiet_root_logger()`: at `-l warn` and above Faust's worker sets the root logger to
DEBUG for its terminal spinner, so every `logger.debug` call on the hot path builds a
record that nothing prints; this puts the root level back.
Why and how: docs/faust-traps.md#debug-records-nobody-prints
"""

from __future__ import annotations

import logging


def quiet_root_logger() -> None:
    """Undo the spinner's DEBUG root level; the printing handlers keep theirs."""
    root = logging.getLogger()
    levels = [h.level for h in root.handlers if type(h).__name__ != "SpinnerHandler"]
    if levels and root.level < min(levels):
        root.setLevel(min(levels))
