"""Retention verdicts from item metadata: which rule applies, and the exact age boundary."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from panscan.config import Policy, RetentionRule, parse_policy
from panscan.model import Item, RetentionVerdict
from panscan.retention import DAY, DEFAULT_RULE, RetentionTally, has_rules, judge, rule_for

NOW = datetime(2025, 6, 30, 12, 0, 0, tzinfo=UTC).timestamp()


def policy(*rules: tuple[str, list[str], str], default: str | None = None) -> Policy:
    lines = ["[retention]"]
    if default is not None:
        lines.append(f'default_max_age = "{default}"')
    for name, match, max_age in rules:
        lines += ["[[retention.rule]]", f'name = "{name}"', f"match = {json.dumps(match)}", f'max_age = "{max_age}"']
    return parse_policy("\n".join(lines) + "\n")


def item(location: str, age_seconds: float | None) -> Item:
    return Item(location, "s3" if location.startswith("s3://") else "file",
                last_modified=None if age_seconds is None else NOW - age_seconds)


@pytest.mark.parametrize(("max_age", "days"), [("1d", 1), ("90d", 90), ("13w", 91), ("2y", 730)])
def test_an_item_exactly_max_age_old_passes_and_one_second_older_is_flagged(max_age: str, days: int) -> None:
    p = policy(("logs", ["/data/*"], max_age))
    limit = days * DAY

    assert judge(item("/data/a.log", limit - 1), p, NOW) is None
    assert judge(item("/data/a.log", limit), p, NOW) is None
    verdict = judge(item("/data/a.log", limit + 1), p, NOW)
    assert verdict is not None
    assert (verdict.rule, verdict.max_age_days, verdict.age_days) == ("logs", days, days)


def test_the_default_max_age_has_the_same_boundary() -> None:
    p = policy(default="365d")

    assert judge(item("/anywhere/x", 365 * DAY), p, NOW) is None
    verdict = judge(item("/anywhere/x", 365 * DAY + 1), p, NOW)
    assert verdict is not None and verdict.rule == DEFAULT_RULE and verdict.max_age_days == 365


def test_age_days_is_rounded_down() -> None:
    p = policy(default="1d")

    verdict = judge(item("/x", 3 * DAY - 1), p, NOW)

    assert verdict is not None and verdict.age_days == 2


def test_the_first_matching_rule_in_file_order_wins_and_the_default_comes_last() -> None:
    p = policy(("short", ["s3://acme-logs/payments/*"], "30d"),
               ("long", ["s3://acme-logs/*"], "1y"),
               default="90d")

    assert rule_for(p, "s3://acme-logs/payments/2024/01.log") == ("short", 30)
    assert rule_for(p, "s3://acme-logs/other/01.log") == ("long", 365)
    assert rule_for(p, "s3://elsewhere/01.log") == (DEFAULT_RULE, 90)


def test_a_later_broader_rule_does_not_override_an_earlier_narrow_one_even_when_longer() -> None:
    p = policy(("broad", ["s3://acme-logs/*"], "7d"), ("narrow", ["s3://acme-logs/keep/*"], "10y"))

    assert rule_for(p, "s3://acme-logs/keep/x") == ("broad", 7)


def test_without_rules_or_default_nothing_is_judged() -> None:
    empty = Policy()

    assert not has_rules(empty)
    assert rule_for(empty, "/data/x") is None
    assert judge(item("/data/x", 100 * 365 * DAY), empty, NOW) is None


def test_a_location_no_rule_matches_is_not_judged_without_a_default() -> None:
    p = policy(("logs", ["/data/app/logs/*"], "90d"))

    assert has_rules(p)
    assert rule_for(p, "/data/app/db/x") is None
    assert judge(item("/data/app/db/x", 1000 * DAY), p, NOW) is None


def test_a_default_alone_counts_as_rules() -> None:
    assert has_rules(policy(default="1y"))


def test_an_item_without_a_modification_time_is_not_judged() -> None:
    assert judge(item("/data/x", None), policy(default="1d"), NOW) is None


@pytest.mark.parametrize(("location", "expected"), [
    ("/data/app/logs/x.log", "logs"),
    ("/data/app/logs/2024/01/x.log", "logs"),  # `*` crosses "/"
    ("/data/app/logsx", None),
    ("/data/app/LOGS/x.log", None),  # case matters, as on the filesystem and in S3
    ("s3://acme-payments-logs/2024/x.gz", "logs"),
    ("s3://acme-payments-logs-old/x.gz", None),
    ("s3://acme-cards/exports/x.csv", "exports"),
    ("s3://acme-cards/exports/x.txt", None),
    ("s3://acme-cards-eu/exports/y.csv", "exports"),
    ("glacier://vault-1/abc", "vaults"),
    ("relative/data/app/logs/x", None),  # the glob is anchored at both ends
])
def test_globs_match_the_whole_location_for_files_and_s3(location: str, expected: str | None) -> None:
    p = policy(("logs", ["s3://acme-payments-logs/*", "/data/app/logs/*"], "90d"),
               ("exports", ["s3://acme-cards*/exports/*.csv"], "30d"),
               ("vaults", ["glacier://vault-?/*"], "1y"))

    found = rule_for(p, location)

    assert (found[0] if found else None) == expected


def test_the_verdict_copies_the_items_metadata() -> None:
    p = policy(("logs", ["s3://b/*"], "90d"))
    it = Item("s3://b/k", "s3", size=1234, last_modified=NOW - 100 * DAY, version_id="v1",
              storage_class="GLACIER", is_latest=True)

    assert judge(it, p, NOW) == RetentionVerdict(
        location="s3://b/k", version_id="v1", rule="logs", age_days=100, max_age_days=90,
        storage_class="GLACIER", size=1234, last_modified=NOW - 100 * DAY, noncurrent_days=None)


def test_a_noncurrent_version_reports_how_long_it_has_been_noncurrent() -> None:
    p = policy(("logs", ["s3://b/*"], "90d"))
    it = Item("s3://b/k", "s3", last_modified=NOW - 200 * DAY, version_id="v0", is_latest=False,
              noncurrent_since=NOW - 45 * DAY - 10)

    verdict = judge(it, p, NOW)

    assert verdict is not None and verdict.age_days == 200 and verdict.noncurrent_days == 45


def test_two_policies_used_alternately_each_keep_their_own_rules() -> None:
    strict = policy(("r", ["/d/*"], "1d"))
    lax = policy(("r", ["/d/*"], "1y"))
    old = item("/d/x", 10 * DAY)

    for _ in range(3):
        assert judge(old, strict, NOW) is not None
        assert judge(old, lax, NOW) is None


def test_a_younger_item_under_a_short_rule_is_flagged_even_when_the_default_is_longer() -> None:
    p = policy(("short", ["/tmp/*"], "1d"), default="1y")

    assert judge(item("/tmp/x", 2 * DAY), p, NOW) is not None
    assert judge(item("/var/x", 2 * DAY), p, NOW) is None


# --- RetentionTally -------------------------------------------------------------------------


def tally_of(p: Policy, items: list[Item]) -> dict[str, object]:
    tally = RetentionTally()
    for it in items:
        tally.add(it, judge(it, p, NOW))
    return tally.to_record()


def test_the_tally_counts_every_item_and_the_expired_ones_by_rule_place_and_class() -> None:
    p = policy(("logs", ["s3://logs/*"], "30d"), default="1y")
    items = [
        Item("s3://logs/a", "s3", size=100, last_modified=NOW - 40 * DAY, storage_class="STANDARD", version_id="1"),
        Item("s3://logs/b", "s3", size=10, last_modified=NOW - 10 * DAY, storage_class="STANDARD"),
        Item("s3://logs/c", "s3", size=5, last_modified=NOW - 900 * DAY, storage_class="GLACIER", version_id="2"),
        Item("/srv/data/x.csv", "file", size=7, last_modified=NOW - 400 * DAY),
        Item("/srv/data/y.csv", "file", size=None, last_modified=None),
        Item("glacier://vault/archive-1", "glacier", size=50, last_modified=NOW - 2 * DAY),
    ]

    record = tally_of(p, items)

    assert json.loads(json.dumps(record)) == record
    assert record == {
        "type": "retention_summary",
        "items": 6, "bytes": 172, "expired_items": 3, "expired_bytes": 112,
        "by_rule": {"default": {"items": 1, "bytes": 7}, "logs": {"items": 2, "bytes": 105}},
        "by_place": {
            "s3://logs": {"items": 3, "expired_items": 2, "expired_bytes": 105},
            "/srv/data": {"items": 2, "expired_items": 1, "expired_bytes": 7},
            "glacier://vault": {"items": 1, "expired_items": 0, "expired_bytes": 0},
        },
        "places_left_out": 0,
        "by_storage_class": {
            "-": {"items": 3, "bytes": 57, "expired_items": 1, "expired_bytes": 7},
            "GLACIER": {"items": 1, "bytes": 5, "expired_items": 1, "expired_bytes": 5},
            "STANDARD": {"items": 2, "bytes": 110, "expired_items": 1, "expired_bytes": 100},
        },
        "oldest": {"location": "s3://logs/c", "version_id": "2", "age_days": 900, "rule": "logs"},
    }


def test_an_empty_tally_has_zero_counts_and_no_oldest_item() -> None:
    record = RetentionTally().to_record()

    assert (record["items"], record["expired_items"], record["by_place"], record["oldest"]) == (0, 0, {}, None)


def test_the_tally_keeps_the_fifty_places_with_most_expired_bytes_and_counts_the_rest() -> None:
    p = policy(default="1d")
    items = [Item(f"/data/d{i:02}/f", "file", size=i + 1, last_modified=NOW - 5 * DAY) for i in range(60)]
    items += [Item(f"/fresh/d{i}/f", "file", size=1000, last_modified=NOW) for i in range(3)]

    record = tally_of(p, items)

    places = record["by_place"]
    assert isinstance(places, dict) and len(places) == 50
    names = list(places)
    assert (names[0], names[-1]) == ("/data/d59", "/data/d10")
    assert record["places_left_out"] == 13


def test_with_many_rules_each_location_gets_its_own_rule() -> None:
    p = policy(*((f"r{i}", [f"s3://bucket-{i}/*", f"/data/{i}/*/*.log"], f"{i + 1}d") for i in range(12)))

    assert [rule_for(p, f"/data/{i}/x/y.log") for i in range(12)] == [(f"r{i}", i + 1) for i in range(12)]
    assert [rule_for(p, f"s3://bucket-{i}/k") for i in range(12)] == [(f"r{i}", i + 1) for i in range(12)]


def test_a_rule_built_without_globs_matches_nothing() -> None:
    p = Policy(default_max_age_days=30, rules=(RetentionRule("empty", (), 1),))

    assert rule_for(p, "/anything") == (DEFAULT_RULE, 30)


def test_the_tally_takes_locations_from_the_item_so_a_masked_item_stays_masked() -> None:
    p = policy(default="1d")
    raw = Item("s3://b/4111111111111111.csv", "s3", size=1, last_modified=NOW - 5 * DAY, version_id="v")
    masked = Item("s3://b/411111******1111.csv", "s3", size=1, last_modified=NOW - 5 * DAY, version_id="v")
    tally = RetentionTally()

    tally.add(masked, judge(raw, p, NOW))

    record = tally.to_record()
    assert "4111111111111111" not in json.dumps(record)
    assert record["oldest"] == {"location": "s3://b/411111******1111.csv", "version_id": "v", "age_days": 5,
                                "rule": DEFAULT_RULE}
