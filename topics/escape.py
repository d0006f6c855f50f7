"""Untrusted text made safe to show (SPEC 11.4): one escaper for every terminal line
`vigocli` prints and every mail the sender writes, and the masking of credentials inside
URLs. Pure functions, no I/O: the lowest layer, so that every layer can use them.

`printable` shows each control or invisible formatting character as an escape (`\\x1b`,
`\\u202e`): C0 controls (CR, LF, TAB, ESC, BEL, ...), DEL, C1 controls (NEL, CSI, OSC,
...), Unicode format characters (bidi embeddings, overrides and isolates, LRM/RLM, ALM,
zero-width characters, the BOM), line and paragraph separators, and lone surrogates (which
no terminal can encode). What remains cannot move the cursor, clear the screen, write the
clipboard, change the terminal's title, reorder the text around it or start a new line.
Backslashes are left alone, so escaping twice changes nothing.
"""

from __future__ import annotations

import unicodedata
from typing import Final

__all__ = ["ESCAPED_CATEGORIES", "MASK", "mask_credentials", "printable"]

#: Cc: C0, DEL and C1 controls; Cf: format characters (bidi controls included);
#: Zl, Zp: line and paragraph separators; Cs: lone surrogates.
ESCAPED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
MASK: Final = "***"


def _escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str) -> str:
    """`text` with every control, format and separator character shown as an escape."""
    if text.isprintable() and text.isascii():  # the common case, at C speed
        return text
    return "".join(_escape(c) if unicodedata.category(c) in ESCAPED_CATEGORIES else c for c in text)


def mask_credentials(text: str) -> str:
    """`text`, a URL or a comma list of addresses (`user:pass@host:9092,host2:9092`,
    `https://user:pass@host/`), with the user information of each replaced by `***`."""
    return ",".join(_mask_one(item) for item in text.split(","))


def _mask_one(item: str) -> str:
    scheme, sep, rest = item.partition("://")
    if not sep:
        scheme, rest = "", item
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    if "@" not in authority:
        return item
    host = authority.rsplit("@", 1)[1]
    lead = len(item) - len(item.lstrip())  # keep the spacing of `a, b`
    prefix = f"{scheme}{sep}" if sep else item[:lead]
    return f"{prefix}{MASK}@{host}{tail}"
