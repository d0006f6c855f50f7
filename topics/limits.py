"""The size limits of input events (SPEC 10.9) and how text is measured against them.

They exist so that an envoy's stored state stays under 64 KiB whatever its events hold:
every string that reaches the envoys table is bounded here or in the JSON Schemas. JSON
Schema's ``maxLength`` counts characters, so the byte limits are checked again by the
decoder with these functions.
"""

from __future__ import annotations

import re
from typing import Final

#: Labels of one enrollment: how many, and UTF-8 bytes per key and per value.
MAX_LABELS: Final = 64
MAX_LABEL_KEY_BYTES: Final = 63
MAX_LABEL_VALUE_BYTES: Final = 255
#: All keys and values of one enrollment together, measured by `json_text_bytes`.
MAX_LABELS_BYTES: Final = 8 * 1024
#: UTF-8 bytes of a resource id or a module name (in resources and module_errors).
MAX_NAME_BYTES: Final = 1024

# The characters JSON must escape; orjson writes the short forms, \u00XX for the rest.
_ESCAPED: Final = re.compile(r'[\x00-\x1f"\\]')
_SHORT_ESCAPES: Final = frozenset('"\\\b\f\n\r\t')


def utf8_bytes(text: str) -> int:
    """UTF-8 length: the unit of the byte limits (JSON Schema can only count characters)."""
    return len(text.encode("utf-8", "surrogatepass"))


def json_text_bytes(text: str) -> int:
    """Bytes of `text` inside a JSON string as our records write it (UTF-8, escapes
    included, quotes not): what it really costs in a stored record. A CR costs 2 bytes,
    a NUL 6; for text without control characters, quotes or backslashes this is the
    UTF-8 length."""
    size = len(text.encode("utf-8", "surrogatepass"))
    for char in _ESCAPED.findall(text):
        size += 1 if char in _SHORT_ESCAPES else 5
    return size
