"""S3 lifecycle rules compared with the retention policy: where a bucket lets data outlive it."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from panscan.config import Policy, parse_policy
from panscan.retention import DEFAULT_RULE, LifecycleGap, lifecycle_gaps, policy_scopes
from panscan.sources.s3_facts import NEVER_VERSIONED, NOT_CONFIGURED, NOT_PERMITTED, LifecycleRule, _lifecycle


def policy(*rules: tuple[str, list[str], str], default: str | None = None) -> Policy:
    lines = ["[retention]"]
    if default is not None:
        lines.append(f'default_max_age = "{default}"')
    for name, match, max_age in rules:
        lines += ["[[retention.rule]]", f'name = "{name}"', f"match = {json.dumps(match)}", f'max_age = "{max_age}"']
    return parse_policy("\n".join(lines) + "\n")


NINETY = policy(("cards", ["s3://b/*"], "90d"))


def kinds(gaps: list[LifecycleGap]) -> list[str]:
    return [g.kind for g in gaps]


def whole_bucket(**kw: object) -> LifecycleRule:
    return LifecycleRule(id="r", enabled=True, prefix="", **kw)  # type: ignore[arg-type]


# --- current versions -----------------------------------------------------------------------


def test_expiration_after_365_days_under_a_90_day_policy_is_flagged() -> None:
    gaps = lifecycle_gaps("b", NEVER_VERSIONED, (whole_bucket(expiration_days=365),), NINETY)

    assert gaps == [LifecycleGap("b", "cards", "", 90, "longer_expiration",
                                 "lifecycle expires current versions after 365 days; the policy allows 90 days")]


def test_expiration_after_30_days_in_an_unversioned_bucket_passes() -> None:
    assert lifecycle_gaps("b", NEVER_VERSIONED, (whole_bucket(expiration_days=30),), NINETY) == []


def test_expiration_exactly_at_the_policy_age_passes() -> None:
    assert lifecycle_gaps("b", NEVER_VERSIONED, (whole_bucket(expiration_days=90),), NINETY) == []


def test_a_bucket_without_lifecycle_configuration_has_no_expiration() -> None:
    assert kinds(lifecycle_gaps("b", NEVER_VERSIONED, NOT_CONFIGURED, NINETY)) == ["no_expiration"]


def test_a_versioned_bucket_without_lifecycle_configuration_also_keeps_noncurrent_versions() -> None:
    assert kinds(lifecycle_gaps("b", "Enabled", NOT_CONFIGURED, NINETY)) == [
        "no_expiration", "no_noncurrent_expiration"]


def test_an_unreadable_lifecycle_is_reported_as_such_not_as_missing() -> None:
    gaps = lifecycle_gaps("b", "Enabled", NOT_PERMITTED, NINETY)

    assert kinds(gaps) == ["lifecycle_unreadable"]
    assert NOT_PERMITTED in gaps[0].detail


def test_a_disabled_rule_does_not_count() -> None:
    disabled = LifecycleRule(id="off", enabled=False, prefix="", expiration_days=7)

    assert kinds(lifecycle_gaps("b", NEVER_VERSIONED, (disabled,), NINETY)) == ["no_expiration"]


def test_a_rule_for_a_narrower_prefix_does_not_cover_the_whole_bucket_scope() -> None:
    logs_only = LifecycleRule(id="logs", enabled=True, prefix="logs/", expiration_days=30)

    assert kinds(lifecycle_gaps("b", NEVER_VERSIONED, (logs_only,), NINETY)) == ["no_expiration"]


def test_a_whole_bucket_rule_covers_a_policy_scope_on_a_prefix() -> None:
    p = policy(("cards", ["s3://b/exports/*.csv"], "90d"))

    assert lifecycle_gaps("b", NEVER_VERSIONED, (whole_bucket(expiration_days=60),), p) == []


def test_a_tag_filtered_rule_does_not_count() -> None:
    tagged = whole_bucket(expiration_days=30, narrowed=True)

    assert kinds(lifecycle_gaps("b", NEVER_VERSIONED, (tagged,), NINETY)) == ["no_expiration"]


def test_the_shortest_covering_expiration_is_the_one_that_applies() -> None:
    rules = (whole_bucket(expiration_days=365),
             LifecycleRule(id="cards", enabled=True, prefix="cards/", expiration_days=60))
    p = policy(("cards", ["s3://b/cards/*"], "90d"))

    assert lifecycle_gaps("b", NEVER_VERSIONED, rules, p) == []


def test_an_expiration_on_a_fixed_date_is_flagged_because_it_limits_no_age() -> None:
    dated = whole_bucket(expiration_date="2030-01-01T00:00:00+00:00")

    gaps = lifecycle_gaps("b", NEVER_VERSIONED, (dated,), NINETY)

    assert kinds(gaps) == ["date_expiration"]
    assert "2030-01-01" in gaps[0].detail


# --- versioned buckets ----------------------------------------------------------------------


def test_a_versioned_bucket_with_30_day_expiration_and_no_noncurrent_expiration_is_flagged() -> None:
    gaps = lifecycle_gaps("b", "Enabled", (whole_bucket(expiration_days=30),), NINETY)

    assert kinds(gaps) == ["no_noncurrent_expiration"]


def test_a_versioned_bucket_with_30_plus_30_days_passes_a_90_day_policy() -> None:
    rules = (whole_bucket(expiration_days=30, noncurrent_expiration_days=30),)

    assert lifecycle_gaps("b", "Enabled", rules, NINETY) == []


def test_a_versioned_bucket_with_30_plus_70_days_is_flagged_for_a_90_day_policy() -> None:
    rules = (whole_bucket(expiration_days=30, noncurrent_expiration_days=70),)

    gaps = lifecycle_gaps("b", "Enabled", rules, NINETY)

    assert kinds(gaps) == ["noncurrent_too_long"]
    assert "100 days" in gaps[0].detail


def test_a_suspended_bucket_still_holds_noncurrent_versions() -> None:
    gaps = lifecycle_gaps("b", "Suspended", (whole_bucket(expiration_days=30),), NINETY)

    assert kinds(gaps) == ["no_noncurrent_expiration"]


def test_noncurrent_expiration_may_come_from_a_different_covering_rule() -> None:
    rules = (whole_bucket(expiration_days=30),
             LifecycleRule(id="versions", enabled=True, prefix="", noncurrent_expiration_days=60))

    assert lifecycle_gaps("b", "Enabled", rules, NINETY) == []


def test_without_current_expiration_a_versioned_bucket_reports_both_gaps_it_has() -> None:
    rules = (whole_bucket(noncurrent_expiration_days=10),)

    assert kinds(lifecycle_gaps("b", "Enabled", rules, NINETY)) == ["no_expiration"]
    assert kinds(lifecycle_gaps("b", "Enabled", (), NINETY)) == ["no_expiration", "no_noncurrent_expiration"]


# --- scopes ---------------------------------------------------------------------------------


def test_scopes_follow_policy_order_with_the_default_last() -> None:
    p = policy(("logs", ["s3://acme/logs/*"], "30d"),
               ("exports", ["/local/*", "s3://acme/exports/2024-*.csv"], "90d"),
               ("other-bucket", ["s3://elsewhere/*"], "1d"),
               default="1y")

    assert policy_scopes(p, "acme") == [("logs", "logs/", 30), ("exports", "exports/2024-", 90),
                                        (DEFAULT_RULE, "", 365)]


def test_a_bucket_glob_with_wildcards_applies_to_every_bucket_it_matches() -> None:
    p = policy(("acme", ["s3://acme-*/data/*"], "90d"), ("all", ["s3://*"], "1y"))

    assert policy_scopes(p, "acme-eu") == [("acme", "data/", 90), ("all", "", 365)]
    assert policy_scopes(p, "other") == [("all", "", 365)]


def test_the_default_does_not_apply_to_a_bucket_a_rule_covers_entirely() -> None:
    p = policy(("archive", ["s3://archive/*"], "7y"), default="1y")

    assert policy_scopes(p, "archive") == [("archive", "", 7 * 365)]
    assert lifecycle_gaps("archive", NEVER_VERSIONED, (whole_bucket(expiration_days=7 * 365),), p) == []


def test_a_rule_shadowed_by_an_earlier_catch_all_never_applies_and_is_left_out() -> None:
    p = policy(("all", ["s3://b/*"], "30d"), ("keep", ["s3://b/keep/*"], "10y"))

    assert policy_scopes(p, "b") == [("all", "", 30)]


def test_a_rule_with_two_globs_on_the_same_bucket_keeps_only_the_broader_prefix() -> None:
    p = policy(("logs", ["s3://b/logs/*", "s3://b/logs/2024/*", "s3://b/logs/*"], "30d"))

    assert policy_scopes(p, "b") == [("logs", "logs/", 30)]


def test_a_policy_without_s3_rules_or_default_checks_nothing() -> None:
    p = policy(("files", ["/data/*"], "30d"))

    assert policy_scopes(p, "b") == []
    assert lifecycle_gaps("b", "Enabled", NOT_CONFIGURED, p) == []


def test_gaps_are_listed_per_scope_in_policy_order() -> None:
    p = policy(("logs", ["s3://b/logs/*"], "30d"), default="90d")
    rules = (LifecycleRule(id="logs", enabled=True, prefix="logs/", expiration_days=60),
             whole_bucket(expiration_days=400))

    gaps = lifecycle_gaps("b", NEVER_VERSIONED, rules, p)

    assert [(g.rule, g.prefix, g.kind) for g in gaps] == [
        ("logs", "logs/", "longer_expiration"), (DEFAULT_RULE, "", "longer_expiration")]
    assert "60 days; the policy allows 30 days" in gaps[0].detail


def test_the_gap_record_is_json_with_type_lifecycle_gap() -> None:
    gap = lifecycle_gaps("b", NEVER_VERSIONED, NOT_CONFIGURED, NINETY)[0]

    assert json.loads(json.dumps(gap.to_record())) == {
        "type": "lifecycle_gap", "bucket": "b", "rule": "cards", "prefix": "", "max_age_days": 90,
        "kind": "no_expiration",
        "detail": "no enabled lifecycle rule expires current versions; the policy allows 90 days"}


# --- through s3_facts' reading of a GetBucketLifecycleConfiguration response ---------------


def test_tag_and_size_filters_read_from_s3_mark_rules_as_narrowed_and_they_enforce_nothing() -> None:
    response = {"Rules": [
        {"ID": "tag", "Status": "Enabled", "Filter": {"Tag": {"Key": "k", "Value": "v"}},
         "Expiration": {"Days": 30}},
        {"ID": "and-tags", "Status": "Enabled",
         "Filter": {"And": {"Prefix": "", "Tags": [{"Key": "k", "Value": "v"}]}},
         "Expiration": {"Days": 30}},
        {"ID": "size", "Status": "Enabled", "Filter": {"ObjectSizeGreaterThan": 1024},
         "Expiration": {"Days": 30}},
        {"ID": "and-size", "Status": "Enabled",
         "Filter": {"And": {"Prefix": "logs/", "ObjectSizeLessThan": 10}},
         "Expiration": {"Days": 30}},
        {"ID": "prefix", "Status": "Enabled", "Filter": {"Prefix": "logs/"}, "Expiration": {"Days": 30}},
        {"ID": "legacy", "Status": "Enabled", "Prefix": "", "Expiration": {"Days": 400},
         "NoncurrentVersionExpiration": {"NoncurrentDays": 10}},
        {"ID": "dated", "Status": "Enabled", "Filter": {},
         "Expiration": {"Date": datetime(2030, 1, 1, tzinfo=UTC)}},
    ]}

    rules = _lifecycle(response)

    assert isinstance(rules, tuple)
    assert {r.id: r.narrowed for r in rules} == {
        "tag": True, "and-tags": True, "size": True, "and-size": True,
        "prefix": False, "legacy": False, "dated": False}
    assert {r.id: r.prefix for r in rules}["and-size"] == "logs/"
    assert [(g.kind, g.detail.split(";")[0]) for g in lifecycle_gaps("b", "Enabled", rules, NINETY)] == [
        ("longer_expiration", "lifecycle expires current versions after 400 days"),
        ("noncurrent_too_long", "lifecycle keeps a version's data up to 410 days "
                                "(400 days current, then 10 days non-current)"),
    ]
