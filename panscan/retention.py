"""Retention: which policy rule governs a location, which items are older than it, and where
an S3 bucket's lifecycle configuration cannot enforce it.

Pure functions over metadata: no I/O, no AWS clients. What callers may rely on:

* :func:`rule_for` tries the rules in file order and takes the first whose ``match`` globs
  match the whole location (``fnmatch.fnmatchcase``; ``*`` also matches ``/``), then the
  default, if the policy sets one.
* :func:`judge` flags an item iff ``now - last_modified > max_age_days * DAY`` (seconds,
  UTC POSIX times): an item exactly ``max_age_days`` old passes.
* :func:`lifecycle_gaps` names each way a bucket's lifecycle rules let data outlive the
  policy; a bucket whose rules enforce it yields nothing.
* Records carry locations as found: they pass the masking boundary before any sink.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase, translate
from typing import TYPE_CHECKING, Any

from panscan.config import Policy
from panscan.model import Item, RetentionVerdict

if TYPE_CHECKING:
    from panscan.sources.s3_facts import LifecycleRule

DAY = 86400
DEFAULT_RULE = "default"

# The versioning states in which a bucket may hold non-current versions (s3_facts' strings).
_VERSIONED = frozenset({"Enabled", "Suspended"})
_WILDCARDS = re.compile(r"[*?\[]")


@dataclass(frozen=True, slots=True)
class _Compiled:
    # One regex for all rules, one capturing group around each rule's globs: a single call
    # per location, and alternatives are tried in order, so the first rule in the file wins.
    match: Callable[[str], re.Match[str] | None] | None
    by_group: dict[int, tuple[str, int]]  # group index of a rule -> (name, max_age_days)
    default: tuple[str, int] | None
    min_days: int | None  # the shortest max age of any rule: younger items need no matching


# Keyed on id() with the policy kept in the value, so an id cannot be reused while cached;
# hashing a Policy on every call would rehash its rules and limits for each of millions of items.
_CACHE: dict[int, tuple[Policy, _Compiled]] = {}
_CACHE_SIZE = 16


def _compiled(policy: Policy) -> _Compiled:
    entry = _CACHE.get(id(policy))
    if entry is not None and entry[0] is policy:
        return entry[1]
    parts: list[str] = []
    by_group: dict[int, tuple[str, int]] = {}
    group = 1
    for rule in policy.rules:
        # (?!) for a rule without globs: an empty alternative would match every location.
        body = "|".join(translate(g) for g in rule.match) or "(?!)"
        by_group[group] = (rule.name, rule.max_age_days)
        parts.append(f"({body})")
        group += 1 + re.compile(body).groups  # translate() may add groups of its own
    default = (DEFAULT_RULE, policy.default_max_age_days) if policy.default_max_age_days is not None else None
    ages = [days for _, days in by_group.values()] + ([default[1]] if default else [])
    compiled = _Compiled(re.compile("|".join(parts)).match if parts else None, by_group, default,
                         min(ages) if ages else None)
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.clear()
    _CACHE[id(policy)] = (policy, compiled)
    return compiled


def has_rules(policy: Policy) -> bool:
    """Whether the policy sets any retention age (a default or at least one rule)."""
    return policy.default_max_age_days is not None or bool(policy.rules)


def rule_for(policy: Policy, location: str) -> tuple[str, int] | None:
    """``(rule name, max_age_days)`` governing ``location``, or None when nothing applies."""
    compiled = _compiled(policy)
    if compiled.match is not None:
        m = compiled.match(location)
        if m is not None:
            # The rule's group encloses any groups of its globs, so it is the last to close.
            return compiled.by_group[m.lastindex or 0]
    return compiled.default


def judge(item: Item, policy: Policy, now: float) -> RetentionVerdict | None:
    """The verdict for an item older than its rule at ``now``; None when it is not, when no
    rule applies, or when its age is unknown."""
    last_modified = item.last_modified
    if last_modified is None:
        return None
    age = now - last_modified
    min_days = _compiled(policy).min_days
    if min_days is None or age <= min_days * DAY:
        return None
    applied = rule_for(policy, item.location)
    if applied is None:
        return None
    name, max_age_days = applied
    if age <= max_age_days * DAY:
        return None
    since = item.noncurrent_since
    return RetentionVerdict(
        location=item.location,
        version_id=item.version_id,
        rule=name,
        age_days=math.floor(age / DAY),
        max_age_days=max_age_days,
        storage_class=item.storage_class,
        size=item.size,
        last_modified=last_modified,
        noncurrent_days=math.floor((now - since) / DAY) if since is not None else None,
    )


# --- S3 lifecycle against the policy -------------------------------------------------------


@dataclass(frozen=True)
class LifecycleGap:
    """One way a bucket's lifecycle lets objects under ``prefix`` outlive a policy rule.

    ``kind`` is one of ``lifecycle_unreadable``, ``no_expiration``, ``longer_expiration``,
    ``date_expiration``, ``no_noncurrent_expiration``, ``noncurrent_too_long``; ``detail``
    is one sentence for the report.
    """

    bucket: str
    rule: str
    prefix: str
    max_age_days: int
    kind: str
    detail: str

    def to_record(self) -> dict[str, Any]:
        return {
            "type": "lifecycle_gap", "bucket": self.bucket, "rule": self.rule, "prefix": self.prefix,
            "max_age_days": self.max_age_days, "kind": self.kind, "detail": self.detail,
        }


def policy_scopes(policy: Policy, bucket: str) -> list[tuple[str, str, int]]:
    """``(rule name, key prefix, max_age_days)`` for each rule that can govern objects of
    ``bucket``, in policy order, the default last (prefix ``""``: the whole bucket).

    A glob ``s3://BUCKET/KEY`` counts when BUCKET matches the bucket name; its prefix is KEY up
    to the first wildcard. A glob with no ``/`` after the bucket counts only when it ends in
    ``*`` (it then matches every key). A scope is left out when a broader prefix of the same
    rule already covers it, or when an earlier rule matches every key under it (first match
    wins, so the later rule never applies there).
    """
    scopes: list[tuple[str, str, int]] = []
    claimed: list[str] = []  # prefixes under which earlier rules match every key
    for rule in policy.rules:
        prefixes: list[str] = []
        catch_all: list[str] = []
        for glob in rule.match:
            parsed = _s3_glob(glob, bucket)
            if parsed is None:
                continue
            prefix, everything = parsed
            prefixes.append(prefix)
            if everything:
                catch_all.append(prefix)
        for prefix in dict.fromkeys(prefixes):
            broader = any(other != prefix and prefix.startswith(other) for other in prefixes)
            shadowed = any(prefix.startswith(other) for other in claimed)
            if not broader and not shadowed:
                scopes.append((rule.name, prefix, rule.max_age_days))
        claimed.extend(catch_all)
    if policy.default_max_age_days is not None and "" not in claimed:
        scopes.append((DEFAULT_RULE, "", policy.default_max_age_days))
    return scopes


def _s3_glob(glob: str, bucket: str) -> tuple[str, bool] | None:
    """(key prefix, matches every key under it) when ``glob`` can match objects of ``bucket``."""
    if not glob.startswith("s3://"):
        return None
    bucket_part, slash, key_part = glob[len("s3://"):].partition("/")
    if not slash:
        # "s3://acme-*" reaches into every acme- bucket because `*` matches "/"; a glob
        # without "/" and without a trailing `*` matches no object at all.
        if bucket_part.endswith("*") and fnmatchcase(bucket, bucket_part):
            return "", True
        return None
    if not fnmatchcase(bucket, bucket_part):
        return None
    wildcard = _WILDCARDS.search(key_part)
    prefix = key_part[:wildcard.start()] if wildcard else key_part
    tail = key_part[len(prefix):]
    return prefix, bool(tail) and not tail.strip("*")


def lifecycle_gaps(bucket: str, versioning: str, lifecycle: tuple[LifecycleRule, ...] | str,
                   policy: Policy) -> list[LifecycleGap]:
    """Where ``bucket``'s lifecycle (s3_facts' value or non-value string) fails to remove
    data within the policy's ages; one gap per scope and kind, scopes in
    :func:`policy_scopes` order."""
    from panscan.sources.s3_facts import NOT_CONFIGURED

    scopes = policy_scopes(policy, bucket)
    if isinstance(lifecycle, str):
        if lifecycle != NOT_CONFIGURED:
            return [
                LifecycleGap(bucket, name, prefix, max_days, "lifecycle_unreadable",
                             f"the lifecycle configuration could not be read ({lifecycle}); "
                             f"the policy allows {max_days} days")
                for name, prefix, max_days in scopes
            ]
        lifecycle = ()
    versioned = versioning in _VERSIONED
    return [gap for name, prefix, max_days in scopes
            for gap in _scope_gaps(bucket, name, prefix, max_days, lifecycle, versioned)]


def _scope_gaps(bucket: str, name: str, prefix: str, max_days: int, lifecycle: tuple[LifecycleRule, ...],
                versioned: bool) -> list[LifecycleGap]:
    gaps: list[LifecycleGap] = []

    def gap(kind: str, detail: str) -> None:
        gaps.append(LifecycleGap(bucket, name, prefix, max_days, kind, f"{detail}; the policy allows {max_days} days"))

    # A rule narrowed by tags or sizes may skip any given object, so it enforces nothing.
    covering = [r for r in lifecycle if r.enabled and not r.narrowed and prefix.startswith(r.prefix)]
    current = min((r.expiration_days for r in covering if r.expiration_days is not None), default=None)
    if current is None:
        dates = sorted(r.expiration_date for r in covering if r.expiration_date)
        if dates:
            gap("date_expiration", f"lifecycle expires current versions on a fixed date ({dates[0]}), "
                                   "which does not limit their age")
        else:
            gap("no_expiration", "no enabled lifecycle rule expires current versions")
    elif current > max_days:
        gap("longer_expiration", f"lifecycle expires current versions after {current} days")
    if not versioned:
        return gaps
    noncurrent = min((r.noncurrent_expiration_days for r in covering
                      if r.noncurrent_expiration_days is not None), default=None)
    if noncurrent is None:
        gap("no_noncurrent_expiration", "no enabled lifecycle rule expires non-current versions, "
                                        "so overwritten and deleted data stays")
    elif current is not None and current + noncurrent > max_days:
        # Expiring a current version in a versioned bucket only makes it non-current.
        gap("noncurrent_too_long", f"lifecycle keeps a version's data up to {current + noncurrent} days "
                                   f"({current} days current, then {noncurrent} days non-current)")
    return gaps


# --- the metadata-only sweep's totals -------------------------------------------------------

_PLACES_KEPT = 50


class RetentionTally:
    """Totals of a retention sweep: every item seen, and those past their rule, by rule,
    by place (bucket, vault or directory) and by storage class, plus the oldest expired item.

    Memory is one entry per place, rule and storage class, not per item.
    """

    def __init__(self) -> None:
        self.items = 0
        self.bytes = 0
        self.expired_items = 0
        self.expired_bytes = 0
        # Lists rather than dicts: add() runs once per S3 version.
        self._by_rule: dict[str, list[int]] = {}  # [items, bytes]
        self._by_place: dict[str, list[int]] = {}  # [items, expired_items, expired_bytes]
        self._by_class: dict[str, list[int]] = {}  # [items, bytes, expired_items, expired_bytes]
        # (last_modified, location, version_id, age_days, rule), taken from the item rather than
        # the verdict so that a caller who masks item locations before add() is not undone.
        self._oldest: tuple[float, str, str | None, int, str] | None = None

    def add(self, item: Item, verdict: RetentionVerdict | None) -> None:
        """Count ``item``; ``verdict`` is what :func:`judge` said about it. Only the item's
        location is kept, never the verdict's."""
        size = item.size or 0
        self.items += 1
        self.bytes += size
        place = self._by_place.get(where := _place(item.location))
        if place is None:
            place = self._by_place[where] = [0, 0, 0]
        place[0] += 1
        cls_key = item.storage_class or "-"
        cls = self._by_class.get(cls_key)
        if cls is None:
            cls = self._by_class[cls_key] = [0, 0, 0, 0]
        cls[0] += 1
        cls[1] += size
        if verdict is None:
            return
        self.expired_items += 1
        self.expired_bytes += size
        place[1] += 1
        place[2] += size
        cls[2] += 1
        cls[3] += size
        rule = self._by_rule.get(verdict.rule)
        if rule is None:
            rule = self._by_rule[verdict.rule] = [0, 0]
        rule[0] += 1
        rule[1] += size
        if self._oldest is None or verdict.last_modified < self._oldest[0]:
            self._oldest = (verdict.last_modified, item.location, item.version_id, verdict.age_days, verdict.rule)

    def to_record(self) -> dict[str, Any]:
        """The JSON Lines ``retention_summary`` record; places and the oldest location come
        from the items given to :meth:`add`, so mask those to mask this."""
        ranked = sorted(self._by_place.items(), key=lambda kv: (-kv[1][2], -kv[1][1], -kv[1][0], kv[0]))
        oldest = self._oldest
        return {
            "type": "retention_summary",
            "items": self.items,
            "bytes": self.bytes,
            "expired_items": self.expired_items,
            "expired_bytes": self.expired_bytes,
            "by_rule": {name: {"items": c[0], "bytes": c[1]} for name, c in sorted(self._by_rule.items())},
            "by_place": {place: {"items": c[0], "expired_items": c[1], "expired_bytes": c[2]}
                         for place, c in ranked[:_PLACES_KEPT]},
            "places_left_out": max(0, len(ranked) - _PLACES_KEPT),
            "by_storage_class": {cls: {"items": c[0], "bytes": c[1], "expired_items": c[2], "expired_bytes": c[3]}
                                 for cls, c in sorted(self._by_class.items())},
            "oldest": None if oldest is None else {
                "location": oldest[1], "version_id": oldest[2], "age_days": oldest[3], "rule": oldest[4],
            },
        }


def _place(location: str) -> str:
    for scheme in ("s3://", "glacier://"):
        if location.startswith(scheme):
            end = location.find("/", len(scheme))
            return location if end < 0 else location[:end]
    return os.path.dirname(location)
