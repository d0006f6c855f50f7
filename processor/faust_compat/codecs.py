"""Table value codecs: Faust derives a table's changelog codec from its `value_type`, not
from a `schema`, for writing and for recovery alike, so each of our tables declares a
value type that names one of our codecs (upstream #310: a table's `schema` is not used).
The codecs themselves, and which table uses which, are in `processor.records`.
Why and how: docs/faust-traps.md#table-codecs
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from faust.serializers import codecs

#: A codec as `processor.records` defines it: encode to bytes, decode from bytes.
EncodeDecode = tuple[Callable[[Any], Any], Callable[[bytes], Any]]


class _Codec(codecs.Codec):
    def __init__(self, dumps: Any, loads: Any) -> None:
        super().__init__()
        self._encode, self._decode = dumps, loads

    def _dumps(self, obj: Any) -> bytes:
        return bytes(self._encode(obj))

    def _loads(self, s: bytes) -> Any:
        return self._decode(s)


def value_type(codec_name: str) -> type:
    """A table `value_type` whose changelog records go through the codec `codec_name`
    (`_options.serializer`) and whose decoded values are taken as they are (`from_data`)."""
    options = type("_options", (), {"serializer": codec_name})
    return type(
        f"ValueType[{codec_name}]",
        (),
        {
            "_options": options,
            "from_data": classmethod(lambda cls, data, preferred_type=None: data),
        },
    )


def register_value_codecs(by_name: Mapping[str, EncodeDecode]) -> None:
    """Register each codec with Faust under its name (the one its value type names)."""
    for name, (dumps, loads) in by_name.items():
        codecs.register(name, _Codec(dumps, loads))
