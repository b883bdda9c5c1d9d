"""Loading and validating ``panscan.toml`` (the ``--policy`` file).

Validation happens before anything is scanned: an unknown section or key, a value of the
wrong type, a duration or size that does not parse, is a :class:`ConfigError` whose
message names the file and the key (the CLI turns it into exit status 3). Only parsing is
done here; retention rules are applied by a later stage.

Durations: a whole number followed by ``d`` (days), ``w`` (weeks) or ``y`` (years of 365
days), e.g. ``90d``, ``13w``, ``2y``. Sizes: a whole number of bytes, or a string such as
``"512MiB"``, ``"4GiB"`` or ``"10GB"`` (binary and decimal units).
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from panscan.extract.budget import Limits


class ConfigError(ValueError):
    """The policy file is missing, malformed or invalid."""


@dataclass(frozen=True)
class RetentionRule:
    name: str
    match: tuple[str, ...]  # globs over locations
    max_age_days: int
    justification: str = ""


@dataclass(frozen=True)
class Policy:
    """A validated policy; the defaults are what panscan does without ``--policy``."""

    default_max_age_days: int | None = None
    rules: tuple[RetentionRule, ...] = ()
    limits: Limits = field(default_factory=Limits)
    excludes: tuple[str, ...] = ()
    source: str | None = None  # the file it came from


_DURATION = re.compile(r"^\s*(\d+)\s*([dwy])\s*$")
_DAYS = {"d": 1, "w": 7, "y": 365}
_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]i?B|B)?\s*$")
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


def parse_duration(value: object, where: str) -> int:
    """Days in a duration such as ``90d``, ``13w`` or ``2y``."""
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return int(m[1]) * _DAYS[m[2]]
    raise ConfigError(f"{where}: expected a duration such as \"90d\", \"13w\" or \"2y\", got {value!r}")


def parse_size(value: object, where: str) -> int:
    """Bytes in a size such as ``4096``, ``"512MiB"`` or ``"4GiB"``."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m:
            return int(m[1]) * _UNITS[m[2] or "B"]
    raise ConfigError(f"{where}: expected a size such as 1048576, \"512MiB\" or \"4GiB\", got {value!r}")


def load_policy(path: str | Path) -> Policy:
    """Read and validate a policy file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read policy file {p}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"policy file {p} is not UTF-8 text") from None
    return parse_policy(text, str(p))


def parse_policy(text: str, name: str = "panscan.toml") -> Policy:
    """Validate the text of a policy file; ``name`` is used in messages."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name}: not valid TOML: {exc}") from None
    _only(doc, {"retention", "limits", "scan"}, name)
    retention = _table(doc, "retention", name)
    limits = _table(doc, "limits", name)
    scan = _table(doc, "scan", name)

    _only(retention, {"default_max_age", "rule"}, f"{name} [retention]")
    default = retention.get("default_max_age")
    default_days = (parse_duration(default, f"{name} [retention] default_max_age")
                    if default is not None else None)
    rules_raw = retention.get("rule", [])
    if not isinstance(rules_raw, list):
        raise ConfigError(f"{name} [retention] rule: expected [[retention.rule]] tables")
    rules = tuple(_rule(r, f"{name} [[retention.rule]] #{i}") for i, r in enumerate(rules_raw, 1))
    seen: set[str] = set()
    for rule in rules:
        if rule.name in seen:
            raise ConfigError(f"{name} [[retention.rule]]: the name {rule.name!r} is used twice")
        seen.add(rule.name)

    _only(scan, {"exclude"}, f"{name} [scan]")
    excludes = _strings(scan.get("exclude", []), f"{name} [scan] exclude")

    return Policy(default_days, rules, _limits(limits, f"{name} [limits]"), excludes, name)


def _rule(raw: object, where: str) -> RetentionRule:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table")
    _only(raw, {"name", "match", "max_age", "justification"}, where)
    for key in ("name", "match", "max_age"):
        if key not in raw:
            raise ConfigError(f"{where}: missing {key!r}")
    rule_name = raw["name"]
    if not isinstance(rule_name, str) or not rule_name.strip():
        raise ConfigError(f"{where} name: expected a non-empty string")
    match = raw["match"]
    globs = _strings([match] if isinstance(match, str) else match, f"{where} ({rule_name}) match")
    if not globs:
        raise ConfigError(f"{where} ({rule_name}) match: expected at least one glob")
    justification = raw.get("justification", "")
    if not isinstance(justification, str):
        raise ConfigError(f"{where} ({rule_name}) justification: expected a string")
    return RetentionRule(rule_name, globs, parse_duration(raw["max_age"], f"{where} ({rule_name}) max_age"),
                         justification)


def _limits(raw: dict[str, Any], where: str) -> Limits:
    fields = {f.name: f for f in dataclasses.fields(Limits)}
    _only(raw, set(fields), where)
    values: dict[str, Any] = {}
    for key, value in raw.items():
        default = getattr(Limits(), key)
        if key.endswith(("_bytes", "_memory")):
            parsed: int | float = parse_size(value, f"{where} {key}")
        elif isinstance(default, float):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{where} {key}: expected a number, got {value!r}")
            parsed = float(value)
        else:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{where} {key}: expected a whole number, got {value!r}")
            parsed = value
        if parsed <= 0:
            raise ConfigError(f"{where} {key}: must be greater than 0")
        values[key] = parsed
    return Limits(**values)


def _table(doc: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: [{key}] must be a table")
    return value


def _strings(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: expected a list of non-empty strings")
    return tuple(value)


def _only(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} "
                          f"{', '.join(repr(k) for k in unknown)} (allowed: {', '.join(sorted(allowed))})")
