"""Faust codecs for the table values, backed by `topics.state` (which owns the bytes)."""

from __future__ import annotations

from typing import Any

from faust.serializers import codecs

from vigo.topics.state import (
    decode_fleet_entry,
    decode_stored_envoy,
    encode_fleet_entry,
    encode_stored_envoy,
)

ENVOY_CODEC = "vigo_envoy"
FLEET_ENTRY_CODEC = "vigo_fleet_entry"


class _EnvoyCodec(codecs.Codec):
    def _dumps(self, obj: Any) -> bytes:
        return encode_stored_envoy(obj)

    def _loads(self, s: bytes) -> Any:
        return decode_stored_envoy(s)


class _FleetEntryCodec(codecs.Codec):
    def _dumps(self, obj: Any) -> bytes:
        return encode_fleet_entry(obj)

    def _loads(self, s: bytes) -> Any:
        return decode_fleet_entry(s)


def register_codecs() -> None:
    codecs.register(ENVOY_CODEC, _EnvoyCodec())
    codecs.register(FLEET_ENTRY_CODEC, _FleetEntryCodec())


class _ValueType:
    """Faust derives a table's changelog codec from its value type (`_options.serializer`)
    and rebuilds values through `from_data`; our codecs already return the objects."""

    serializer: str

    @classmethod
    def from_data(cls, data: Any, preferred_type: Any = None) -> Any:
        return data


class EnvoyRecordType(_ValueType):
    class _options:
        serializer = ENVOY_CODEC


class FleetEntryType(_ValueType):
    class _options:
        serializer = FLEET_ENTRY_CODEC
