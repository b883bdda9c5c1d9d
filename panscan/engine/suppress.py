"""What a report shows of the findings: ``[[allow]]`` entries and ``--min-confidence``.

Workers report every finding and the state stores every one, whatever the policy says: a
sweep is compared with the one before it on what was found, so a finding an entry starts to
suppress is "still present" (suppressed), never "resolved". What reaches the reports is
judged here, on the coordinator, after masking, one finding at a time:

1. below ``--min-confidence``: counted (``below_threshold`` in the summary), not listed;
2. else, matched by an ``[[allow]]`` entry that has not expired: a ``suppressed`` record with
   the entry's number and reason, counted (``suppressed``) and listed by every report;
3. else reported: a ``finding`` record, counted, in the exit status.

Neither 1 nor 2 counts toward the exit status. When several entries match, the first in the
file wins. Entries match masked values only (the masked location, the masked number, the
keyed fingerprint), so the judgement can be made again from what the state holds:
``panscan report`` re-judges a stored sweep with the entries, their expiry and the threshold
its summary recorded (:meth:`Triage.from_summary`), never with today's policy file.

Location globs match as retention rules do (``fnmatch.fnmatchcase``: the whole string, ``*``
also crosses ``/``) against the finding's location; for a relative local path, also against
its absolute path (resolved in the directory the scan ran in, recorded with the sweep); and,
for a finding inside a container or in a name, against location and member joined with
``/`` (``/srv/vendor.zip/tests/cards.txt``).
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from fnmatch import translate
from typing import Any

from panscan.config import AllowRule, Policy
from panscan.findings.mask import mask_text
from panscan.model import Finding, ItemResult, Suppressed

#: ``--min-confidence`` choices, lowest first; ``low`` reports everything.
CONFIDENCES = ("low", "medium", "high")
_RANK = {c: i for i, c in enumerate(CONFIDENCES)}


@dataclass
class _Entry:
    rule: AllowRule  # reason and location glob masked
    expired: bool
    glob: Any = None  # compiled location glob (re.Pattern.match), or None
    count: int = 0

    def at(self, places: tuple[str, ...]) -> bool:
        return self.glob is None or any(self.glob(p) for p in places)


class Triage:
    """The judge of one sweep's findings, and its counts for the summary (see the module
    docstring). ``directory`` resolves relative local paths for location globs."""

    def __init__(self, rules: Sequence[AllowRule] = (), *, expired: Iterable[int] = (), min_confidence: str = "low",
                 directory: str | None = None, source: str | None = None) -> None:
        if min_confidence not in _RANK:
            raise ValueError(f"min_confidence: one of {', '.join(CONFIDENCES)}, not {min_confidence!r}")
        gone = set(expired)
        self.min_confidence = min_confidence
        self.directory = directory
        self.source = source
        self.entries = [_Entry(r, r.number in gone, re.compile(translate(r.location)).match if r.location else None)
                        for r in rules]
        active = [e for e in self.entries if not e.expired]
        self._by_fingerprint: dict[str, list[_Entry]] = {}
        self._by_masked: dict[str, list[_Entry]] = {}
        for e in active:
            if e.rule.fingerprint:
                self._by_fingerprint.setdefault(e.rule.fingerprint, []).append(e)
            elif e.rule.masked:
                self._by_masked.setdefault(e.rule.masked, []).append(e)
        self._by_location = [e for e in active if not (e.rule.fingerprint or e.rule.masked)]
        self._min_rank = _RANK[min_confidence]
        self._judging = bool(active) or self._min_rank > 0
        self.suppressed = 0
        self.below_threshold = 0
        # Findings of items still being scanned that were not reported, until their result.
        self._held_back: dict[tuple[str, str | None], int] = {}
        self._places_of: tuple[tuple[str, str | None], tuple[str, ...]] | None = None

    @classmethod
    def for_scan(cls, policy: Policy, min_confidence: str = "low", *, today: datetime.date,
                 directory: str | None = None) -> Triage:
        """The judge of a scan: the policy's entries (reasons and globs masked: they reach
        reports and the state), those past ``expires`` on ``today`` kept but inactive."""
        rules = [replace(r, reason=mask_text(r.reason), location=None if r.location is None else mask_text(r.location))
                 for r in policy.allow]
        return cls(rules, expired=(r.number for r in policy.allow if r.expired(today)), min_confidence=min_confidence,
                   directory=mask_text(directory if directory is not None else os.getcwd()),
                   source=None if policy.source is None else mask_text(policy.source))

    @classmethod
    def from_summary(cls, min_confidence: str, allow: Mapping[str, Any] | None) -> Triage:
        """The judge a sweep used, from its summary's ``min_confidence`` and ``allow`` (as
        :meth:`summary_fields` wrote them); a summary without them (older sweeps) reports all."""
        rules: list[AllowRule] = []
        expired: list[int] = []
        for record in (allow or {}).get("entries") or ():
            try:
                expires = record.get("expires")
                rule = AllowRule(int(record["entry"]), str(record["reason"]), record.get("fingerprint"),
                                 record.get("location"), record.get("masked"),
                                 None if expires is None else datetime.date.fromisoformat(expires), record.get("line"))
            except (KeyError, TypeError, ValueError):
                continue  # a record this panscan did not write: judged as reported, never hidden
            rules.append(rule)
            if record.get("expired"):
                expired.append(rule.number)
        return cls(rules, expired=expired, min_confidence=min_confidence if min_confidence in _RANK else "low",
                   directory=(allow or {}).get("directory"), source=(allow or {}).get("policy"))

    # --- judging -----------------------------------------------------------------------------

    def judge(self, result: ItemResult) -> tuple[ItemResult, tuple[Suppressed, ...]]:
        """``result`` with only its reported findings (``earlier_findings`` counting only the
        reported ones of its earlier batches), and the suppressed records of the rest."""
        held_back = self._held_back.pop((result.item.location, result.item.version_id), 0) if self._held_back else 0
        if not self._judging or not (result.findings or held_back):
            return result, ()
        shown, suppressed = self.judge_findings(result.findings, streaming=False)
        return replace(result, findings=shown, earlier_findings=result.earlier_findings - held_back), suppressed

    def judge_findings(self, findings: Sequence[Finding], *,
                       streaming: bool = True) -> tuple[tuple[Finding, ...], tuple[Suppressed, ...]]:
        """The reported findings among ``findings`` and the suppressed records of the others;
        ``streaming``: a batch of an item whose result comes later (see :meth:`judge`)."""
        if not self._judging or not findings:
            return tuple(findings), ()
        shown: list[Finding] = []
        suppressed: list[Suppressed] = []
        below = 0
        for f in findings:
            if _RANK.get(str(f.confidence), 0) < self._min_rank:
                below += 1
                continue
            entry = self._entry_for(f)
            if entry is None:
                shown.append(f)
                continue
            entry.count += 1
            rule = entry.rule
            suppressed.append(Suppressed(f, rule.number, rule.matched_by, rule.reason,
                                         None if rule.expires is None else rule.expires.isoformat()))
        self.below_threshold += below
        self.suppressed += len(suppressed)
        hidden = below + len(suppressed)
        if streaming and hidden:
            key = (findings[0].location, findings[0].version_id)
            self._held_back[key] = self._held_back.get(key, 0) + hidden
        return tuple(shown), tuple(suppressed)

    def _entry_for(self, f: Finding) -> _Entry | None:
        best: _Entry | None = None
        for entry in (*self._by_fingerprint.get(f.fingerprint, ()), *self._by_masked.get(f.masked, ())):
            if (best is None or entry.rule.number < best.rule.number) and entry.at(self._places(f)):
                best = entry
        for entry in self._by_location:  # in file order: the first that matches is the one
            if best is not None and entry.rule.number > best.rule.number:
                break
            if entry.at(self._places(f)):
                return entry
        return best

    def _places(self, f: Finding) -> tuple[str, ...]:
        """What a location glob is matched against (see the module docstring); the last
        answer is kept, since an item's findings come together."""
        key = (f.location, f.member)
        if self._places_of is not None and self._places_of[0] == key:
            return self._places_of[1]
        places = [f.location]
        if self.directory and "://" not in f.location and f.location != "-" and not os.path.isabs(f.location):
            places.append(os.path.normpath(os.path.join(self.directory, f.location)))
        if f.member:
            places += [f"{p}/{f.member}" for p in places]
        self._places_of = (key, tuple(places))
        return self._places_of[1]

    # --- summary -----------------------------------------------------------------------------

    def summary_fields(self) -> dict[str, Any]:
        """The summary's ``suppressed``, ``below_threshold``, ``min_confidence`` and ``allow``
        (the entries in force, each with how many findings it suppressed; None without any)."""
        allow = None
        if self.entries:
            allow = {"policy": self.source, "directory": self.directory, "entries": [
                {"entry": e.rule.number, "line": e.rule.line, "fingerprint": e.rule.fingerprint,
                 "location": e.rule.location, "masked": e.rule.masked, "reason": e.rule.reason,
                 "expires": None if e.rule.expires is None else e.rule.expires.isoformat(),
                 "expired": e.expired, "suppressed": e.count} for e in self.entries]}
        return {"suppressed": self.suppressed, "below_threshold": self.below_threshold,
                "min_confidence": self.min_confidence, "allow": allow}
