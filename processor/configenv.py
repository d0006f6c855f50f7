"""`VIGO_` environment variables as configuration overrides (SPEC sections 5 and 10.7).

`VIGO_` + the key's path in upper case with `__` between levels; a `.` inside a key is
written `_` (`VIGO_SMTP__EVENTS__CONVERGENCE_THRESHOLD__THRESHOLD=95`); maps and lists are
JSON (`VIGO_SMTP__TO='["ops@example.com"]'`), scalars are the text itself and pydantic
converts them exactly as it converts the file's values.

Names are resolved against the configuration models, so a variable names exactly one key
and a typo is an error naming it, not an override silently ignored. Overrides are merged
into the file's data per key: one event's threshold from the environment keeps every
other event of the file. A JSON value replaces its key's whole value.
"""

from __future__ import annotations

import copy
import json
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel

PREFIX = "VIGO_"
_CONTAINERS = (list, dict, tuple, set, frozenset)
#: Deepest JSON value a variable may hold: no setting nests near this, and a deeper one
#: would reach Python's recursion limit in the parser (a traceback, not one line).
MAX_JSON_DEPTH = 32


class EnvError(ValueError):
    """A variable that names no key or holds no readable value; `key` is the dotted key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True, slots=True)
class Override:
    """One variable: its name (for messages), the key path it sets and the value."""

    name: str
    path: tuple[str, ...]
    value: Any

    @property
    def key(self) -> str:
        return ".".join(self.path)


def env_overrides(environ: Mapping[str, str], root: type[BaseModel]) -> list[Override]:
    """The configuration variables of `environ`, whole values before the keys inside them
    (so `VIGO_SMTP__HOST` wins over a `host` in `VIGO_SMTP='{...}'`).

    `VIGO_<NAME>` without `__` whose NAME is no section belongs to another tool
    (`VIGO_CONFIG`, `VIGO_URL`, `VIGO_TOKEN`) and is left alone; with `__` it is a key."""
    found = []
    for name, text in environ.items():
        if not name.upper().startswith(PREFIX):
            continue
        parts = name[len(PREFIX) :].split("__")
        if len(parts) == 1 and _field(root, parts[0]) is None:
            continue
        path, annotation = _resolve(root, parts, name)
        found.append(Override(name, path, _value(annotation, text, path, name)))
    return sorted(found, key=lambda o: (len(o.path), o.name))


def merge(data: Mapping[str, Any], overrides: Iterable[Override]) -> dict[str, Any]:
    """The file's data with every override set at its key; the file is not modified."""
    merged = copy.deepcopy(dict(data))
    for override in overrides:
        node = merged
        for depth, key in enumerate(override.path[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            elif not isinstance(child, dict):
                where = ".".join(override.path[: depth + 1])
                raise EnvError(where, f"{override.name} sets a key inside it, but it is no map")
            node = child
        node[override.path[-1]] = override.value
    return merged


def _resolve(root: type[BaseModel], parts: list[str], name: str) -> tuple[tuple[str, ...], Any]:
    """The key path a variable names, and the type of the value there."""
    path: list[str] = []
    annotation: Any = root
    for part in parts:
        model = model_of(annotation)
        if model is None:
            raise EnvError(".".join(path), f"{name}: a {_kind(annotation)} has no keys inside")
        found = _field(model, part)
        if found is None:
            raise EnvError(".".join([*path, part.lower()]), f"unknown key (from {name})")
        key, annotation = found
        path.append(key)
    return tuple(path), annotation


def _field(model: type[BaseModel], part: str) -> tuple[str, Any] | None:
    """The field whose key (its alias, as written in the file) is `part` with `.` as `_`."""
    for attribute, info in model.model_fields.items():
        key = info.alias or attribute
        if key.replace(".", "_").lower() == part.lower():
            return key, info.annotation
    return None


def _value(annotation: Any, text: str, path: tuple[str, ...], name: str) -> Any:
    """JSON for maps, lists and sections; the text itself for a scalar."""
    if model_of(annotation) is None and _container(annotation) is None:
        return text
    if _json_depth(text) > MAX_JSON_DEPTH:
        raise EnvError(".".join(path), f"{name}: JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        kind = _kind(annotation)
        example = '["ops@example.com"]' if kind == "list" else '{"key": "value"}'
        raise EnvError(".".join(path), f"{name} must be JSON (a {kind}, e.g. {example})") from None


def _json_depth(text: str) -> int:
    """How deep the arrays and objects of a JSON text nest, without parsing it: brackets
    outside strings, counted in one pass (so any depth is measured without recursion)."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def model_of(annotation: Any) -> type[BaseModel] | None:
    """The configuration section an annotation holds (`X`, `X | None`), if any."""
    for member in _members(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member
    return None


def _members(annotation: Any) -> tuple[Any, ...]:
    """The types of a union (`X | None`), or the one type."""
    if get_origin(annotation) in (Union, types.UnionType):
        return get_args(annotation)
    return (annotation,)


def _container(annotation: Any) -> type | None:
    """`list`, `dict`, ... for a container type (or an optional one), else None."""
    for member in _members(annotation):
        origin = get_origin(member) or member
        if origin in _CONTAINERS:
            return origin  # type: ignore[no-any-return]
    return None


def _kind(annotation: Any) -> str:
    if model_of(annotation) is not None or _container(annotation) is dict:
        return "map"
    return "list" if _container(annotation) is not None else "value"
