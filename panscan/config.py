"""Loading and validating ``panscan.toml`` (the ``--policy`` file).

Validation happens before anything is scanned: an unknown section or key, a value of the
wrong type, a duration or size that does not parse, is a :class:`ConfigError` (the CLI
turns it into exit status 3). Its text is ``FILE:LINE: message`` where the line of the
offending key, table or array item can be found in the file, else ``FILE: message``; the
message names the table and the key, e.g.
``panscan.toml:7: [[retention.rule]] #2 (payment-logs) max_age: expected a duration such as
"90d", "13w" or "2y", got "90 days"``. Only the first problem is reported. Things that are
merely unusual (a rule without a justification, no default) are not errors. Only parsing is
done here; retention rules are applied by a later stage.

Durations: a whole number followed by ``d`` (days), ``w`` (weeks) or ``y`` (years of 365
days), e.g. ``90d``, ``13w``, ``2y``; a maximum age is at least one day. Sizes: a whole
number of bytes, or a string such as ``"512MiB"``, ``"4GiB"`` or ``"10GB"`` (binary and
decimal units).
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime
import difflib
import json
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from panscan.extract.budget import Limits


class ConfigError(ValueError):
    """The policy file is missing, malformed or invalid.

    ``path`` is the file's name as given ("" when the error is not about a file, e.g. from
    :func:`parse_duration` alone), ``line`` the 1-based line of the offending key, table or
    value when it could be found, and ``detail`` the message without the location;
    ``str()`` gives ``path:line: detail``, ``path: detail`` or ``detail``.
    """

    def __init__(self, detail: str, path: str = "", line: int | None = None) -> None:
        super().__init__(detail, path, line)
        self.detail = detail
        self.path = path
        self.line = line

    def __str__(self) -> str:
        if self.path and self.line is not None:
            return f"{self.path}:{self.line}: {self.detail}"
        if self.path:
            return f"{self.path}: {self.detail}"
        return self.detail


@dataclass(frozen=True)
class RetentionRule:
    name: str
    match: tuple[str, ...]  # globs over locations
    max_age_days: int
    justification: str = ""


@dataclass(frozen=True)
class AllowRule:
    """One ``[[allow]]`` entry: a finding an assessor marked once as a known false positive
    or accepted data, so later sweeps list it as ``suppressed`` instead of reporting it.

    It matches by ``fingerprint`` (a finding's keyed fingerprint, lower-case hex), by
    ``location`` (an fnmatch glob over locations, as retention rules match) or by ``masked``
    (a masked form such as ``411111******1111``); a ``location`` next to a ``fingerprint`` or
    ``masked`` narrows it to the places the glob matches. ``reason`` is required; after
    ``expires`` (inclusive: the entry holds through that day, UTC) it suppresses nothing.
    ``number`` is its place among the file's entries (1-based), ``line`` the line of its
    ``[[allow]]`` header.
    """

    number: int
    reason: str
    fingerprint: str | None = None
    location: str | None = None
    masked: str | None = None
    expires: datetime.date | None = None
    line: int | None = None

    @property
    def matched_by(self) -> str:
        """How it matches: ``fingerprint``, ``masked`` or ``location``, with ``+location``
        when a glob narrows a fingerprint or masked entry."""
        kind = "fingerprint" if self.fingerprint else "masked" if self.masked else "location"
        return kind + ("+location" if kind != "location" and self.location else "")

    def expired(self, today: datetime.date) -> bool:
        """Whether the entry no longer suppresses anything on ``today``."""
        return self.expires is not None and today > self.expires


@dataclass(frozen=True)
class Policy:
    """A validated policy; the defaults are what panscan does without ``--policy``."""

    default_max_age_days: int | None = None
    rules: tuple[RetentionRule, ...] = ()
    limits: Limits = field(default_factory=Limits)
    excludes: tuple[str, ...] = ()
    source: str | None = None  # the file it came from
    # [state]: sweeps kept after each scan (None: no bound); see ``panscan state prune``.
    state_keep: int | None = None
    state_prune_older_than_days: int | None = None
    # [[allow]]: findings an assessor accepted (each with a reason); see AllowRule.
    allow: tuple[AllowRule, ...] = ()


_DURATION = re.compile(r"^\s*(\d+)\s*([dwy])\s*$")
_DAYS = {"d": 1, "w": 7, "y": 365}
_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]i?B|B)?\s*$")
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
# A cut-off date this far back is still a valid date: a larger maximum age is a typo, and
# would overflow the date arithmetic of whoever applies the rule.
_MAX_AGE_DAYS = 1000 * 365

_DURATION_EXPECTED = 'expected a duration such as "90d", "13w" or "2y"'
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATE_EXPECTED = "expected a date such as 2027-06-30"
#: A finding's ``fingerprint``: HMAC-SHA256, 64 hex digits.
FINGERPRINT = re.compile(r"^[0-9a-fA-F]{64}$")
_FINGERPRINT_EXPECTED = "expected the 64 hex digits of a finding's fingerprint (the \"fingerprint\" field of a report)"
# What findings.mask.mask_digits gives: first six, asterisks, last four (15-19 digits), or
# asterisks and the last four (12-14 digits).
_MASKED = re.compile(r"^(?:[0-9]{6}\*{5,9}[0-9]{4}|\*{8,10}[0-9]{4})$")
_MASKED_EXPECTED = "expected a masked number as reports show it, such as \"411111******1111\""
_SIZE_EXPECTED = 'expected a size such as 1048576, "512MiB" or "4GiB"'


def _days(value: object) -> int | None:
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return int(m[1]) * _DAYS[m[2]]
    return None


def _bytes(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            return int(m[1]) * _UNITS[m[2] or "B"]
    return None


def parse_duration(value: object, where: str) -> int:
    """Days in a duration such as ``90d``, ``13w`` or ``2y``."""
    days = _days(value)
    if days is None:
        raise ConfigError(f"{where}: {_DURATION_EXPECTED}, got {_show(value)}")
    return days


def parse_size(value: object, where: str) -> int:
    """Bytes in a size such as ``4096``, ``"512MiB"`` or ``"4GiB"``."""
    size = _bytes(value)
    if size is None:
        raise ConfigError(f"{where}: {_SIZE_EXPECTED}, got {_show(value)}")
    return size


def parse_date(value: object, where: str) -> datetime.date:
    """A calendar date: a TOML date (``2027-06-30``) or a string in that form."""
    day = _date(value)
    if day is None:
        raise ConfigError(f"{where}: {_DATE_EXPECTED}, got {_show(value)}")
    return day


def parse_fingerprint(value: object, where: str) -> str:
    """A finding's fingerprint (64 hex digits), lower-cased as reports write it."""
    if isinstance(value, str) and FINGERPRINT.match(value.strip()):
        return value.strip().lower()
    raise ConfigError(f"{where}: {_FINGERPRINT_EXPECTED}, got {_show(value)}")


def _date(value: object) -> datetime.date | None:
    if isinstance(value, datetime.datetime):  # a date with a time: which day it ends is unclear
        return None
    if isinstance(value, datetime.date):
        return value
    if isinstance(value, str) and _DATE.match(value.strip()):
        try:
            return datetime.date.fromisoformat(value.strip())
        except ValueError:  # 2027-02-30
            return None
    return None


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the policy file: {exc.strerror or exc}", str(p)) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ConfigError("not UTF-8 text", str(p), line) from None
    return parse_policy(text, str(p))


def parse_policy(text: str, name: str = "panscan.toml") -> Policy:
    """Validate the text of a policy file; ``name`` is used in messages."""
    text = text.removeprefix("\ufeff")  # an editor's byte-order mark is not an error
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        detail, line = _toml_position(str(exc), text)
        raise ConfigError(f"not valid TOML: {detail}", name, line) from None
    return _Checker(text, name).policy(doc)


def describe_policy(policy: Policy, today: datetime.date | None = None) -> list[str]:
    """Lines for a person summarising a valid policy (what ``check-config`` prints).

    In order: one line per retention rule (name, maximum age in days, globs,
    justification), the default for items no rule matches, the limits that differ from
    the defaults, the excludes, the bounds on the state (``[state]``) when set, and one line
    per ``[[allow]]`` entry (:func:`describe_allow`; expired ones as of ``today``, default
    the current UTC date).
    """
    lines: list[str] = []
    if not policy.rules:
        lines.append("retention rules: none")
    for i, rule in enumerate(policy.rules, 1):
        why = f"justification: {rule.justification}" if rule.justification else "no justification given"
        lines.append(f"rule #{i} {_show(rule.name)}: max age {_day_count(rule.max_age_days)}; "
                     f"matches {', '.join(rule.match)}; {why}")
    if policy.default_max_age_days is None:
        lines.append("no default: items matching no rule are not judged")
    else:
        lines.append(f"default: items matching no rule may be {_day_count(policy.default_max_age_days)} old")
    defaults = Limits()
    changed = [f.name for f in dataclasses.fields(Limits)
               if getattr(policy.limits, f.name) != getattr(defaults, f.name)]
    if not changed:
        lines.append("limits: the defaults")
    for key in changed:
        lines.append(f"limit {key} = {_show_limit(key, getattr(policy.limits, key))} "
                     f"(default {_show_limit(key, getattr(defaults, key))})")
    lines.append(f"exclude: {', '.join(policy.excludes)}" if policy.excludes else "exclude: nothing")
    bounds = ([f"keep the newest {policy.state_keep} sweeps"] if policy.state_keep is not None else []) + (
        [f"remove sweeps older than {_day_count(policy.state_prune_older_than_days)}"]
        if policy.state_prune_older_than_days is not None else [])
    if bounds:
        lines.append(f"state: {' and '.join(bounds)} after each scan")
    today = today or utc_today()
    lines += [describe_allow(rule, today) for rule in policy.allow]
    return lines


def utc_today() -> datetime.date:
    """The date ``expires`` is judged against: today, in UTC."""
    return datetime.datetime.now(datetime.UTC).date()


def describe_allow(rule: AllowRule, today: datetime.date) -> str:
    """One line for a person: ``allow #2 (line 14): fingerprint 9f2c...; reason: ...; expires ...``."""
    where = f" (line {rule.line})" if rule.line is not None else ""
    if rule.fingerprint:
        what = f"fingerprint {rule.fingerprint}"
    elif rule.masked:
        what = f"masked {rule.masked}"
    else:
        what = f"location {rule.location}"
    if rule.location and (rule.fingerprint or rule.masked):
        what += f" at {rule.location}"
    if rule.expires is None:
        until = "no expiry"
    elif rule.expired(today):
        until = f"EXPIRED {rule.expires.isoformat()}: no longer suppresses anything"
    else:
        until = f"expires {rule.expires.isoformat()}"
    return f"allow #{rule.number}{where}: {what}; reason: {rule.reason}; {until}"


def expired_allow_warnings(policy: Policy, today: datetime.date) -> list[str]:
    """A warning per ``[[allow]]`` entry past its ``expires`` date, naming file and line."""
    warnings = []
    for rule in policy.allow:
        if rule.expired(today):
            assert rule.expires is not None
            where = f"{policy.source}:{rule.line}: " if policy.source and rule.line else ""
            warnings.append(f"{where}[[allow]] #{rule.number} expired on {rule.expires.isoformat()}: it no longer "
                            "suppresses anything (renew its expires date or remove it)")
    return warnings


def append_allow(path: str | Path, fingerprint: str, reason: str, *, expires: datetime.date | None = None,
                 location: str | None = None, today: datetime.date | None = None) -> tuple[AllowRule, str]:
    """Append one ``[[allow]]`` entry to the policy file at ``path`` (created when missing) and
    return it with the text added.

    The file's text is kept as it is, comments and layout included: the entry is appended,
    never the document rewritten. The file as it would be is validated first; when that fails
    (the existing file is invalid, or the values are), :class:`ConfigError` names the file and
    line and nothing is written.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        data = b""
    except OSError as exc:
        raise ConfigError(f"cannot read the policy file: {exc.strerror or exc}", str(p)) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError("not UTF-8 text", str(p), data[:exc.start].count(b"\n") + 1) from None
    if not reason.strip():
        raise ConfigError("--reason: say why this finding may stay (it is shown beside it in every report)")
    fingerprint = parse_fingerprint(fingerprint, "FINGERPRINT")
    lines = [f"[[allow]]  # added by panscan allow on {(today or utc_today()).isoformat()}",
             f"fingerprint = {_toml_string(fingerprint)}"]
    if location is not None:
        lines.append(f"location = {_toml_string(location)}")
    lines.append(f"reason = {_toml_string(reason.strip())}")
    if expires is not None:
        lines.append(f"expires = {expires.isoformat()}")
    block = "\n".join(lines) + "\n"
    lead = "" if not text else "\n" if text.endswith("\n") else "\n\n"
    policy = parse_policy(text + lead + block, str(p))
    try:
        with open(p, "a", encoding="utf-8") as out:
            out.write(lead + block)
    except OSError as exc:
        raise ConfigError(f"cannot write the policy file: {exc.strerror or exc}", str(p)) from None
    return policy.allow[-1], block


def _toml_string(value: str) -> str:
    """``value`` as a TOML basic string. Text that is not Unicode (an argument that was not
    UTF-8) is refused: TOML holds Unicode only."""
    out = ['"']
    for ch in value:
        code = ord(ch)
        if 0xD800 <= code <= 0xDFFF:
            raise ConfigError("not valid UTF-8 text (a TOML file holds Unicode only)")
        if ch in '"\\':
            out.append("\\" + ch)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


# Where a value sits in the document: table and key names, and 0-based indexes into arrays
# (the n-th [[retention.rule]] is ("retention", "rule", n - 1)).
_At = tuple[str | int, ...]

_TOP = {"retention": "[retention]", "limits": "[limits]", "scan": "[scan]", "state": "[state]", "allow": "[[allow]]"}
#: The most sweeps ``keep`` may ask for: more is a typo, not a bound.
MAX_KEEP = 1_000_000
_RULE_KEYS = {"name", "match", "max_age", "justification"}
_ALLOW_KEYS = {"fingerprint", "location", "masked", "reason", "expires"}


class _Checker:
    """Validation of one parsed document; errors are located in its text on demand."""

    def __init__(self, text: str, name: str) -> None:
        self.text = text
        self.name = name
        self._locator: _Locator | None = None

    def fail(self, at: _At, detail: str) -> NoReturn:
        if self._locator is None:
            self._locator = _Locator(self.text)
        raise ConfigError(detail, self.name, self._locator.line_of(at))

    def policy(self, doc: dict[str, Any]) -> Policy:
        self.only(doc, set(_TOP), (), "")
        retention = self.table(doc, "retention")
        limits = self.table(doc, "limits")
        scan = self.table(doc, "scan")

        self.only(retention, {"default_max_age", "rule"}, ("retention",), "[retention]")
        default_days = None
        if "default_max_age" in retention:
            default_days = self.max_age(retention["default_max_age"], ("retention", "default_max_age"),
                                        "[retention] default_max_age")
        rules_raw = retention.get("rule", [])
        if not isinstance(rules_raw, list):
            self.fail(("retention", "rule"), "[retention] rule: expected [[retention.rule]] tables "
                                             "(with double brackets), one per rule")
        rules = tuple(self.rule(raw, i) for i, raw in enumerate(rules_raw))
        first: dict[str, int] = {}
        for i, rule in enumerate(rules):
            if rule.name in first:
                j = first[rule.name]
                self.fail(("retention", "rule", i, "name"),
                          f"{_rule_label(i, None)} name: the name {_show(rule.name)} is used twice "
                          f"(first by [[retention.rule]] #{j + 1}{self.at_line(('retention', 'rule', j, 'name'))})")
            first[rule.name] = i

        self.only(scan, {"exclude"}, ("scan",), "[scan]")
        excludes = self.strings(scan.get("exclude", []), ("scan", "exclude"), "[scan] exclude")
        keep, older = self.state(self.table(doc, "state"))
        return Policy(default_days, rules, self.limits(limits), excludes, self.name, keep, older,
                      allow=self.allow(doc))

    def allow(self, doc: dict[str, Any]) -> tuple[AllowRule, ...]:
        raw = doc.get("allow", [])
        if not isinstance(raw, list) or not all(isinstance(entry, dict) for entry in raw):
            self.fail(("allow",), "allow: expected [[allow]] tables (with double brackets), one per entry")
        return tuple(self.allow_rule(entry, i) for i, entry in enumerate(raw))

    def allow_rule(self, raw: dict[str, Any], i: int) -> AllowRule:
        at: _At = ("allow", i)
        label = f"[[allow]] #{i + 1}"
        self.only(raw, _ALLOW_KEYS, at, label)
        if "fingerprint" in raw and "masked" in raw:
            self.fail((*at, "masked"), f"{label}: two matchers, fingerprint and masked: give one of fingerprint, "
                                       "location or masked (a location may narrow a fingerprint or masked entry)")
        if not {"fingerprint", "location", "masked"} & raw.keys():
            self.fail(at, f"{label}: no matcher: give one of fingerprint, location or masked")
        fingerprint = masked = location = None
        if "fingerprint" in raw:
            value = raw["fingerprint"]
            if not isinstance(value, str) or not FINGERPRINT.match(value.strip()):
                self.fail((*at, "fingerprint"), f"{label} fingerprint: {_FINGERPRINT_EXPECTED}, got {_show(value)}")
            fingerprint = value.strip().lower()
        if "masked" in raw:
            value = raw["masked"]
            if not isinstance(value, str) or not _MASKED.match(value.strip()):
                self.fail((*at, "masked"), f"{label} masked: {_MASKED_EXPECTED}, got {_show(value)}")
            masked = value.strip()
        if "location" in raw:
            value = raw["location"]
            if not isinstance(value, str) or not value.strip():
                self.fail((*at, "location"), f"{label} location: expected a non-empty glob, got {_show(value)}")
            location = value
        if "reason" not in raw:
            self.fail(at, f'{label}: missing "reason": say why these findings may stay (it is shown beside them '
                          "in every report)")
        reason = raw["reason"]
        if not isinstance(reason, str) or not reason.strip():
            self.fail((*at, "reason"), f"{label} reason: expected a non-empty string, got {_show(reason)}")
        expires = None
        if "expires" in raw:
            expires = _date(raw["expires"])
            if expires is None:
                self.fail((*at, "expires"), f"{label} expires: {_DATE_EXPECTED}, got {_show(raw['expires'])}")
        return AllowRule(i + 1, reason.strip(), fingerprint, location, masked, expires, self.line_of(at))

    def line_of(self, at: _At) -> int | None:
        if self._locator is None:
            self._locator = _Locator(self.text)
        return self._locator.line_of(at)

    def state(self, raw: dict[str, Any]) -> tuple[int | None, int | None]:
        self.only(raw, {"keep", "prune_older_than"}, ("state",), "[state]")
        keep = raw.get("keep")
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or not 1 <= keep <= MAX_KEEP):
            self.fail(("state", "keep"), f"[state] keep: expected a whole number of sweeps from 1 to {MAX_KEEP}, "
                                         f"got {_show(keep)}")
        older = None
        if "prune_older_than" in raw:
            older = self.max_age(raw["prune_older_than"], ("state", "prune_older_than"), "[state] prune_older_than")
        return keep, older

    def at_line(self, at: _At) -> str:
        if self._locator is None:
            self._locator = _Locator(self.text)
        line = self._locator.line_of(at)
        return f" on line {line}" if line is not None else ""

    def table(self, doc: dict[str, Any], key: str) -> dict[str, Any]:
        value = doc.get(key, {})
        if not isinstance(value, dict):
            self.fail((key,), f"{key}: expected a table {_TOP[key]}, got {_show(value)}")
        return value

    def only(self, table: dict[str, Any], allowed: set[str], at: _At, label: str) -> None:
        unknown = [k for k in table if k not in allowed]  # document order: the first is located
        if not unknown:
            return
        first = unknown[0]
        value = table[first]
        is_tables = isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)
        if not at and (isinstance(value, dict) or is_tables):
            what = f"table [{first}]" if isinstance(value, dict) else f"table [[{first}]]"
            allowed_text = ", ".join(_TOP.get(k, f"[{k}]") for k in sorted(allowed))
        else:
            what = f"key {_show(first)}"
            allowed_text = ", ".join(sorted(allowed))
        if len(unknown) > 1:
            what += " (and " + ", ".join(_show(k) for k in unknown[1:]) + ")"
        # Only near-certain typos: "includes" is no typo of "exclude".
        close = difflib.get_close_matches(first, sorted(allowed), n=1, cutoff=0.85)
        hint = f", did you mean {_show(close[0])}?" if close else ""
        prefix = f"{label}: " if label else ""
        self.fail((*at, first), f"{prefix}unknown {what}{hint} (allowed: {allowed_text})")

    def rule(self, raw: object, i: int) -> RetentionRule:
        at: _At = ("retention", "rule", i)
        if not isinstance(raw, dict):
            self.fail(at, f"{_rule_label(i, None)}: expected a table, got {_show(raw)}")
        rule_name = raw.get("name")
        known = rule_name if isinstance(rule_name, str) and rule_name.strip() else None
        label = _rule_label(i, known)
        self.only(raw, _RULE_KEYS, at, label)
        for key in ("name", "match", "max_age"):
            if key not in raw:
                self.fail(at, f"{label}: missing {_show(key)}")
        if known is None:
            self.fail((*at, "name"), f"{label} name: expected a non-empty string, got {_show(rule_name)}")
        match = raw["match"]
        if isinstance(match, str):
            if not match.strip():
                self.fail((*at, "match"), f"{label} match: expected a non-empty glob, got {_show(match)}")
            globs: tuple[str, ...] = (match,)
        else:
            globs = self.strings(match, (*at, "match"), f"{label} match")
            if not globs:
                self.fail((*at, "match"), f"{label} match: expected at least one glob")
        max_age = self.max_age(raw["max_age"], (*at, "max_age"), f"{label} max_age")
        justification = raw.get("justification", "")
        if not isinstance(justification, str):
            self.fail((*at, "justification"), f"{label} justification: expected a string, "
                                               f"got {_show(justification)}")
        return RetentionRule(known, globs, max_age, justification)

    def max_age(self, value: object, at: _At, label: str) -> int:
        days = _days(value)
        if days is None:
            self.fail(at, f"{label}: {_DURATION_EXPECTED}, got {_show(value)}")
        if days < 1:
            self.fail(at, f"{label}: must be at least 1 day, got {_show(value)}")
        if days > _MAX_AGE_DAYS:
            self.fail(at, f"{label}: must be at most 1000y ({_MAX_AGE_DAYS} days), got {_show(value)}")
        return days

    def strings(self, value: object, at: _At, label: str) -> tuple[str, ...]:
        if not isinstance(value, list):
            self.fail(at, f"{label}: expected a list of non-empty strings, got {_show(value)}")
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                self.fail((*at, i), f"{label}: expected a list of non-empty strings, "
                                     f"item {i + 1} is {_show(item)}")
        return tuple(value)

    def limits(self, raw: dict[str, Any]) -> Limits:
        defaults = Limits()
        self.only(raw, {f.name for f in dataclasses.fields(Limits)}, ("limits",), "[limits]")
        values: dict[str, Any] = {}
        for key, value in raw.items():
            at, label = ("limits", key), f"[limits] {key}"
            parsed: int | float
            if _is_size(key):
                size = _bytes(value)
                if size is None:
                    self.fail(at, f"{label}: {_SIZE_EXPECTED}, got {_show(value)}")
                parsed = size
            elif isinstance(getattr(defaults, key), float):
                if isinstance(value, bool) or not isinstance(value, int | float):
                    self.fail(at, f"{label}: expected a number, got {_show(value)}")
                parsed = float(value)
            else:
                if isinstance(value, bool) or not isinstance(value, int):
                    self.fail(at, f"{label}: expected a whole number, got {_show(value)}")
                parsed = value
            if not parsed > 0:  # also rejects nan
                self.fail(at, f"{label}: must be greater than 0, got {_show(value)}")
            values[key] = parsed
        return Limits(**values)


def _rule_label(i: int, name: str | None) -> str:
    return f"[[retention.rule]] #{i + 1}" + (f" ({name})" if name is not None else "")


def _is_size(key: str) -> bool:
    return key.endswith(("_bytes", "_memory"))


_TOML_POSITION = re.compile(r"^(?P<detail>.*?)\s*\((?:at line (?P<line>\d+), column \d+|at end of document)\)$",
                            re.DOTALL)


def _toml_position(message: str, text: str) -> tuple[str, int | None]:
    """tomllib's message without its position, and the 1-based line it names."""
    m = _TOML_POSITION.match(message)
    if m is None:
        return message, None
    if m["line"] is not None:
        return m["detail"], int(m["line"])
    # "at end of document": the last line that has anything on it.
    return m["detail"], max(1, len(text.rstrip("\r\n").split("\n")))


def _show(value: object) -> str:
    """A value as it would be written in TOML (strings in double quotes), or its kind."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return type(value).__name__


def _day_count(days: int) -> str:
    return "1 day" if days == 1 else f"{days} days"


def _show_limit(key: str, value: float) -> str:
    if _is_size(key):
        size = int(value)
        for unit in ("TiB", "GiB", "MiB", "KiB", "TB", "GB", "MB", "KB"):
            if size and size % _UNITS[unit] == 0:
                return f"{size // _UNITS[unit]} {unit}"
        return f"{size} bytes"
    if isinstance(value, float):
        text = f"{value:g}"
        return f"{text} s" if key.endswith("_seconds") else text
    return str(value)


class _Stop(Exception):
    """The locator met something it does not understand; it keeps what it found."""


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_SCALAR = re.compile(r"[^,\]}\r\n#]+")


class _Locator:
    """The 1-based lines of tables, keys and array items in TOML text.

    tomllib keeps no positions, so this re-reads text that tomllib has accepted, following
    just enough of the grammar (headers, dotted and quoted keys, strings, arrays and inline
    tables) to know where each value is. It is lenient: on anything unexpected it stops and
    keeps what it found, and a caller falls back to the enclosing table or to no line.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.newlines = [i for i, c in enumerate(text) if c == "\n"]
        self.lines: dict[_At, int] = {}
        self.tables_in_arrays: dict[_At, int] = {}  # [[x]] path -> how many so far
        try:
            self.document()
        except (_Stop, IndexError, ValueError, tomllib.TOMLDecodeError):
            pass

    def line_of(self, at: _At) -> int | None:
        """The line of ``at``, else of the nearest enclosing table or key that was found."""
        while at:
            if at in self.lines:
                return self.lines[at]
            at = at[:-1]
        return None

    def record(self, at: _At, pos: int) -> None:
        self.lines.setdefault(at, bisect.bisect_left(self.newlines, pos) + 1)

    def record_path(self, at: _At, pos: int) -> None:
        """A header's table and the tables it creates on the way (``[a.b]`` creates ``a``)."""
        for n in range(1, len(at) + 1):
            self.record(at[:n], pos)

    def document(self) -> None:
        table: _At = ()
        while True:
            self.skip_blank()
            if self.i >= len(self.text):
                return
            start = self.i
            if self.text.startswith("[[", start):
                self.i += 2
                keys = self.key()
                self.expect("]]")
                base = (*self.resolve(keys[:-1]), keys[-1])
                count = self.tables_in_arrays.get(base, 0)
                self.tables_in_arrays[base] = count + 1
                table = (*base, count)
                self.record_path(table, start)
            elif self.text[start] == "[":
                self.i += 1
                keys = self.key()
                self.expect("]")
                table = self.resolve(keys)
                self.record_path(table, start)
            else:
                self.key_value(table)

    def resolve(self, keys: list[str]) -> _At:
        # In a header, a name that is an array of tables means its latest table.
        at: _At = ()
        for key in keys:
            at = (*at, key)
            if at in self.tables_in_arrays:
                at = (*at, self.tables_in_arrays[at] - 1)
        return at

    def key_value(self, table: _At) -> None:
        start = self.i
        keys = self.key()
        self.expect("=")
        for n in range(len(table) + 1, len(table) + len(keys) + 1):
            self.record((table + tuple(keys))[:n], start)
        self.value(table + tuple(keys))

    def key(self) -> list[str]:
        keys: list[str] = []
        while True:
            self.skip_space()
            c = self.text[self.i]
            if c == '"':
                keys.append(tomllib.loads("k = " + self.basic_string())["k"])
            elif c == "'":
                end = self.text.index("'", self.i + 1)
                keys.append(self.text[self.i + 1:end])
                self.i = end + 1
            else:
                m = _BARE_KEY.match(self.text, self.i)
                if m is None:
                    raise _Stop
                keys.append(m[0])
                self.i = m.end()
            self.skip_space()
            if not self.text.startswith(".", self.i):
                return keys
            self.i += 1

    def value(self, at: _At) -> None:
        self.skip_space()
        text, c = self.text, self.text[self.i]
        if text.startswith('"""', self.i) or text.startswith("'''", self.i):
            self.multiline_string()
        elif c == '"':
            self.basic_string()
        elif c == "'":
            self.i = text.index("'", self.i + 1) + 1
        elif c == "[":
            self.items(at, "]", lambda n: (*at, n))
        elif c == "{":
            self.items(at, "}", None)
        else:
            m = _SCALAR.match(text, self.i)
            if m is None:
                raise _Stop
            self.i = m.end()

    def items(self, at: _At, close: str, index: Callable[[int], _At] | None) -> None:
        """An array (``index`` gives each item's place) or an inline table (keys)."""
        self.i += 1
        n = 0
        while True:
            self.skip_blank()
            if self.text[self.i] == close:
                self.i += 1
                return
            if index is not None:
                self.record(index(n), self.i)
                self.value(index(n))
            else:
                self.key_value(at)
            n += 1
            self.skip_blank()
            if self.text[self.i] == ",":
                self.i += 1
            elif self.text[self.i] != close:
                raise _Stop

    def basic_string(self) -> str:
        start, j = self.i, self.i + 1
        while self.text[j] != '"':
            j += 2 if self.text[j] == "\\" else 1
        self.i = j + 1
        return self.text[start:self.i]

    def multiline_string(self) -> None:
        quote = self.text[self.i]
        j = self.i + 3
        while not self.text.startswith(quote * 3, j):
            j += 2 if quote == '"' and self.text[j] == "\\" else 1
            if j >= len(self.text):
                raise _Stop
        j += 3
        # Up to two quotes right before the closing three belong to the string.
        for _ in range(2):
            if j < len(self.text) and self.text[j] == quote:
                j += 1
        self.i = j

    def expect(self, token: str) -> None:
        self.skip_space()
        if not self.text.startswith(token, self.i):
            raise _Stop
        self.i += len(token)

    def skip_space(self) -> None:
        while self.i < len(self.text) and self.text[self.i] in " \t":
            self.i += 1

    def skip_blank(self) -> None:
        """Spaces, newlines and comments."""
        while self.i < len(self.text):
            c = self.text[self.i]
            if c in " \t\r\n":
                self.i += 1
            elif c == "#":
                end = self.text.find("\n", self.i)
                self.i = len(self.text) if end < 0 else end
            else:
                return
