"""Dataclass JSON and finding keys: how records become column values. No database here."""

from __future__ import annotations

import hashlib
import json
import operator
import typing
from collections.abc import Callable, Sequence
from dataclasses import fields
from enum import Enum
from types import UnionType
from typing import Any, TypeVar

from panscan.model import Finding, Item, RetentionVerdict

_T = TypeVar("_T")
_ENUM_FIELDS: dict[type, dict[str, type[Enum]]] = {}


def _enum_fields(cls: type) -> dict[str, type[Enum]]:
    """Fields of dataclass ``cls`` typed as an enum (or enum | None), so JSON values are restored."""
    found = _ENUM_FIELDS.get(cls)
    if found is not None:
        return found
    found = _ENUM_FIELDS[cls] = {}
    for name, hint in typing.get_type_hints(cls).items():
        candidates = typing.get_args(hint) if isinstance(hint, UnionType) or typing.get_origin(hint) is typing.Union \
            else (hint,)
        for c in candidates:
            if isinstance(c, type) and issubclass(c, Enum):
                found[name] = c
    return found


_ENCODER = json.JSONEncoder(separators=(",", ":"), check_circular=False)
_SCAN: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_FIELD_NAMES: dict[type, tuple[tuple[str, ...], Callable[[Any], tuple[Any, ...]]]] = {}


def _dataclass_to_json(obj: Any) -> str:
    # Field by field, so a field added to the dataclass is stored without touching this module
    # (dataclasses.asdict would deep-copy; fields() is slow enough per item to be cached, and
    # attrgetter reads them all in C: an unchanged item's record compares this per item).
    cls = type(obj)
    cached = _FIELD_NAMES.get(cls)
    if cached is None:
        names = tuple(f.name for f in fields(obj))
        cached = _FIELD_NAMES[cls] = (names, operator.attrgetter(*names))
    names, values = cached
    return _ENCODER.encode(dict(zip(names, values(obj), strict=True)))


def _dataclass_from_json(cls: type[_T], text: str) -> _T:
    return _dataclass_from_dict(cls, json.loads(text))


def _dataclass_from_dict(cls: type[_T], data: dict[str, Any]) -> _T:
    enums = _enum_fields(cls)
    kwargs: dict[str, Any] = {}
    # Unknown keys are ignored and missing ones take the field's default: rows written before a
    # field was added or after one was removed still load.
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name in data:
            value = data[f.name]
            if value is not None and f.name in enums:
                value = enums[f.name](value)
            kwargs[f.name] = value
    return cls(**kwargs)


def item_to_json(item: Item) -> str:
    return _dataclass_to_json(item)


# The stored form of an item in a result row (issue 15: half the bytes of item_to_json): its
# location is the row's own column, and a field left at its default of None is left out, so
# only what a source filled in is stored. Still keyed by name, so a field added later loads.
_STORED_NAMES = tuple(f.name for f in fields(Item) if f.name != "location")
_STORED_VALUES = operator.attrgetter(*_STORED_NAMES)
_NONE_BY_DEFAULT = frozenset(f.name for f in fields(Item) if f.default is None)


def _stored_fields(item: Item) -> dict[str, Any]:
    return {name: value for name, value in zip(_STORED_NAMES, _STORED_VALUES(item), strict=True)
            if value is not None or name not in _NONE_BY_DEFAULT}


def item_to_stored(item: Item) -> str:
    """``item`` as a result row stores it (without its location)."""
    return _ENCODER.encode(_stored_fields(item))


def item_matches_stored(item: Item, text: str) -> bool:
    """Whether ``text`` is what :func:`item_to_stored` gives for ``item`` (decoding and
    comparing is cheaper than encoding, and this runs once per unchanged item)."""
    stored: dict[str, Any] = _SCAN(text, 0)[0]  # the C scanner, without json.loads' checks (the text is ours)
    return stored == _stored_fields(item)


def item_from_stored(text: str, location: str) -> Item:
    data = json.loads(text)
    data["location"] = location
    return _dataclass_from_dict(Item, data)


def item_from_json(text: str) -> Item:
    return _dataclass_from_json(Item, text)


def verdict_to_json(verdict: RetentionVerdict) -> str:
    return _dataclass_to_json(verdict)


def verdict_from_json(text: str) -> RetentionVerdict:
    return _dataclass_from_json(RetentionVerdict, text)


KeyCounts = dict[tuple[str | None, str, str], int]


def finding_keys(item: Item, findings: Sequence[Finding], counts: KeyCounts | None = None) -> list[str]:
    """The ``fkey`` of each finding of ``item``, in the order given (see the module docstring).

    ``counts`` carries the numbering from one batch of an item's findings to the next
    (batches in offset order per member), so batches get the keys the whole would get.
    """
    vid = item.version_id or ""
    counts = {} if counts is None else counts
    keys = [""] * len(findings)
    # sorted() is stable: findings at the same offset keep their order, so keys are deterministic.
    for i in sorted(range(len(findings)), key=lambda j: findings[j].offset):
        f = findings[i]
        base = (f.member, str(f.kind), f.fingerprint)
        n = counts.get(base, 0)
        counts[base] = n + 1
        # Length-prefixed parts (unambiguous whatever the names hold; "-" for no member), hashed:
        # a fixed-width key keeps the (sweep_id, fkey) index small whatever the paths.
        member = "-" if f.member is None else f"{len(f.member)}:{f.member}"
        raw = f"{len(item.location)}:{item.location}{len(vid)}:{vid}{member}{f.kind}:{f.fingerprint}:{n}"
        keys[i] = hashlib.blake2b(raw.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
    return keys

