"""The policy file: every error names the file and the line of what is wrong."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from panscan.config import ConfigError, Policy, RetentionRule, describe_policy, load_policy, parse_policy
from panscan.extract.budget import Limits

TWO_RULES = """\
[retention]
default_max_age = "365d"

[[retention.rule]]
name = "card-exports"
match = "/data/exports/*"
max_age = "30d"

[[retention.rule]]
name = "payment-logs"
match = ["s3://acme-payments-logs/*"]
colour = "red"
max_age = "90d"
"""


def error_of(text: str, name: str = "panscan.toml") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_policy(text, name)
    return info.value


def test_unknown_top_level_table_is_reported_at_its_header_with_the_allowed_tables() -> None:
    err = error_of('[retention]\ndefault_max_age = "1y"\n\n[limit]\nmax_members = 5\n', "site.toml")
    assert (err.path, err.line) == ("site.toml", 4)
    assert str(err) == ("site.toml:4: unknown table [limit], did you mean \"limits\"? "
                        "(allowed: [[allow]], [limits], [retention], [scan], [state])")


def test_unknown_key_in_the_second_rule_is_reported_on_its_own_line() -> None:
    err = error_of(TWO_RULES)
    assert err.line == 12
    assert str(err).startswith('panscan.toml:12: [[retention.rule]] #2 (payment-logs): unknown key "colour"')
    assert "(allowed: justification, match, max_age, name)" in str(err)


def test_bad_duration_names_the_rule_and_points_at_the_max_age_line() -> None:
    text = TWO_RULES.replace('colour = "red"\n', "").replace('max_age = "90d"', 'max_age = "90 days"')
    err = error_of(text)
    assert str(err) == ('panscan.toml:12: [[retention.rule]] #2 (payment-logs) max_age: expected a duration '
                        'such as "90d", "13w" or "2y", got "90 days"')


def test_bad_size_in_limits_points_at_its_line() -> None:
    err = error_of('[limits]\nmax_archive_depth = 4\nmax_expanded_bytes = "4 gigs"  # too big?\n')
    assert err.line == 3
    assert str(err) == ('panscan.toml:3: [limits] max_expanded_bytes: expected a size such as 1048576, '
                        '"512MiB" or "4GiB", got "4 gigs"')


def test_toml_syntax_error_uses_the_line_tomllib_reports_without_the_position_text() -> None:
    err = error_of('[limits]\nmax_archive_depth = 4\nmax_members = [1,\n  2,,\n]\n')
    assert err.line == 4
    assert str(err) == "panscan.toml:4: not valid TOML: Invalid value"


def test_toml_error_at_end_of_document_points_at_the_last_line() -> None:
    err = error_of('[limits]\nmax_members = \n\n')
    assert str(err) == "panscan.toml:2: not valid TOML: Invalid value"


def test_missing_key_points_at_the_header_of_its_rule() -> None:
    err = error_of('[retention]\n\n[[retention.rule]]\nname = "a"\nmatch = "/x"\n')
    assert str(err) == 'panscan.toml:3: [[retention.rule]] #1 (a): missing "max_age"'


def test_duplicate_rule_name_points_at_the_second_name_and_mentions_the_first() -> None:
    text = ('[[retention.rule]]\nname = "logs"\nmatch = "/a"\nmax_age = "1d"\n'
            '[[retention.rule]]\nmatch = "/b"\nmax_age = "1d"\nname = "logs"\n')
    err = error_of(text)
    assert err.line == 8
    assert str(err) == ('panscan.toml:8: [[retention.rule]] #2 name: the name "logs" is used twice '
                        '(first by [[retention.rule]] #1 on line 2)')


def test_zero_max_age_is_an_error() -> None:
    err = error_of('[[retention.rule]]\nname = "a"\nmatch = "/x"\nmax_age = "0d"\n')
    assert str(err) == 'panscan.toml:4: [[retention.rule]] #1 (a) max_age: must be at least 1 day, got "0d"'
    assert error_of('[retention]\ndefault_max_age = "0w"\n').line == 2


@pytest.mark.parametrize("match", ['""', "[]", '["/x", "  "]', "[1]", "7"])
def test_rule_globs_must_be_non_empty_strings(match: str) -> None:
    err = error_of(f'[[retention.rule]]\nname = "a"\nmax_age = "1d"\nmatch = {match}\n')
    assert err.line == 4 and "(a) match:" in str(err)


def test_a_rule_without_justification_or_a_policy_without_default_is_valid() -> None:
    policy = parse_policy('[[retention.rule]]\nname = "a"\nmatch = "/x"\nmax_age = "2y"\n')
    assert policy.rules == (RetentionRule("a", ("/x",), 730, ""),)
    assert policy.default_max_age_days is None


def test_locations_are_found_through_quoted_keys_comments_and_multiline_values() -> None:
    text = ('# [limits] in a comment is not a header\n'
            '[ "retention" ]  # [scan]\n'
            '[[ retention . rule ]]\n'
            'name = "x#[y]"\n'
            "match = [ # globs\n  '/a\"',\n  \"\"\"/b\n]\"\"\",\n]\n"
            '"max_age" = "2q"\n')
    assert error_of(text).line == 10


def test_rules_written_as_inline_tables_are_located_by_their_array_item() -> None:
    text = ('retention = { rule = [\n'
            '  { name = "a", match = "/x", max_age = "1d" },\n'
            '  { name = "b", match = "/y", max_age = "1 x" },\n'
            '] }\n')
    err = error_of(text)
    assert err.line == 3 and "#2 (b) max_age" in str(err)


def test_dotted_keys_are_located() -> None:
    err = error_of('\nlimits.max_members = 3\nlimits.max_ratio = "lots"\n')
    assert str(err) == 'panscan.toml:3: [limits] max_ratio: expected a number, got "lots"'


def test_single_bracket_rule_table_explains_the_double_brackets() -> None:
    err = error_of('[retention.rule]\nname = "a"\n')
    assert err.line == 1 and "[[retention.rule]]" in str(err)


def test_unknown_keys_stay_errors_and_name_the_allowed_keys() -> None:
    err = error_of("[scan]\nexclude = []\nincludes = []\n")
    assert str(err) == 'panscan.toml:3: [scan]: unknown key "includes" (allowed: exclude)'


def test_empty_file_is_a_valid_policy_with_the_defaults() -> None:
    assert parse_policy("", "empty.toml") == Policy(source="empty.toml")
    assert parse_policy("# nothing but a comment\n\n") == Policy(source="panscan.toml")


def test_load_policy_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "panscan.toml"
    path.write_text('[limits]\nmax_members = 0\n')
    with pytest.raises(ConfigError) as info:
        load_policy(path)
    assert str(info.value) == f"{path}:2: [limits] max_members: must be greater than 0, got 0"
    assert (info.value.path, info.value.line) == (str(path), 2)


def test_unreadable_or_non_utf8_policy_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_policy(tmp_path / "missing.toml")
    assert info.value.line is None and str(info.value).startswith(f"{tmp_path / 'missing.toml'}: cannot read")
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[scan]\nexclude = ["/caf\xe9"]\n')
    with pytest.raises(ConfigError) as info:
        load_policy(bad)
    assert str(info.value) == f"{bad}:2: not UTF-8 text"


def test_config_error_survives_pickling_with_its_location() -> None:
    err = error_of('[limits]\nmax_members = -1\n')
    copy = pickle.loads(pickle.dumps(err))
    assert (str(copy), copy.path, copy.line, copy.detail) == (str(err), err.path, err.line, err.detail)


def test_describe_policy_summarises_rules_default_changed_limits_and_excludes() -> None:
    policy = parse_policy("""\
[retention]
default_max_age = "365d"
[[retention.rule]]
name = "payment-logs"
match = ["s3://acme-payments-logs/*", "/data/app/logs/*"]
max_age = "13w"
justification = "chargeback window"
[[retention.rule]]
name = "scratch"
match = "/tmp/*"
max_age = "1d"
[limits]
max_archive_depth = 8
max_expanded_bytes = "1GiB"
max_item_seconds = 30
[scan]
exclude = ["/proc/*", "s3://acme-tmp/*"]
""")
    assert describe_policy(policy) == [
        'rule #1 "payment-logs": max age 91 days; matches s3://acme-payments-logs/*, /data/app/logs/*; '
        "justification: chargeback window",
        'rule #2 "scratch": max age 1 day; matches /tmp/*; no justification given',
        "default: items matching no rule may be 365 days old",
        "limit max_expanded_bytes = 1 GiB (default 4 GiB)",
        "limit max_item_seconds = 30 s (default 3600 s)",
        "exclude: /proc/*, s3://acme-tmp/*",
    ]


def test_describe_policy_of_the_empty_policy_says_what_is_not_judged() -> None:
    assert describe_policy(Policy(limits=Limits())) == [
        "retention rules: none",
        "no default: items matching no rule are not judged",
        "limits: the defaults",
        "exclude: nothing",
    ]
