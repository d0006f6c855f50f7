"""The compression of the envoy records' tails in format 4 (`processor.records_envoy`):
zstd at level 1, one frame without checksum or dictionary id, and the dictionary
`processor/data/envoy-tail-1.zdict`, trained by `scripts/envoy_dictionary.py`.

The dictionary is part of the format: stores and changelogs hold tails compressed with it,
so the file is checked against its digest at import, and a new dictionary is a new record
format and a new file, never this one retrained.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Final

import zstandard

#: The tails' zstd dictionary and its digest.
DICTIONARY_PATH: Final = Path(__file__).resolve().parent / "data" / "envoy-tail-1.zdict"
DICTIONARY_SHA256: Final = "801321660528bb9bc34e77f94e9cbd8f19f84460e7c90d56a08e5d63141054dc"
#: The dictionary's size when trained: 4 KiB compressed as well as 16 in our measures.
DICTIONARY_BYTES: Final = 4_096


def _tail_codecs() -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]:
    """The format 4 tail's compress and decompress (the dictionary digested once)."""
    try:
        data = DICTIONARY_PATH.read_bytes()
    except OSError as exc:  # a package built without its data files
        raise ImportError(f"envoy record format 4 needs {DICTIONARY_PATH}: {exc}") from exc
    if hashlib.sha256(data).hexdigest() != DICTIONARY_SHA256:
        raise ImportError(f"{DICTIONARY_PATH} is not the dictionary of envoy record format 4")
    dictionary = zstandard.ZstdCompressionDict(data)
    dictionary.precompute_compress(level=1)
    compressor = zstandard.ZstdCompressor(
        level=1,
        dict_data=dictionary,
        write_checksum=False,
        write_content_size=True,
        write_dict_id=False,
    )
    return compressor.compress, zstandard.ZstdDecompressor(dict_data=dictionary).decompress


#: A format 4 tail from its msgpack bytes, and back.
compress_tail, decompress_tail = _tail_codecs()
