"""S3 keys with control characters and card numbers, against a moto server on loopback.

S3 keys may hold any UTF-8 character but NUL: newlines, carriage returns, escape sequences
and DEL included. Each such key, in several versions, must come out of a scan as one item
per version, with its name masked, valid JSON Lines, and no raw control character in the
table report (where ``\\x1b[...`` would drive the reader's terminal and ``\\r`` or ``\\n``
would forge or hide lines).

Two gaps in moto (5.2) are closed for this module so that it behaves as S3 does, on a
server of its own (the shared session server may already have built its routes):

- S3 honours ``EncodingType=url`` on ListObjectVersions, which botocore always sends and
  decodes; moto ignores it and writes keys raw into the XML, where ``\\r`` reads back as
  ``\\n`` and ``\\x1b`` makes the response invalid (moto answers 500). The patch encodes
  the keys and markers when asked, exactly as S3 does.
- moto's route for ``/bucket/key`` is ``.+``, which no key holding a newline matches (a
  404 for every request on it); the patched converter lets ``.`` match newlines too.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from moto.moto_server import werkzeug_app
from moto.moto_server.utilities import RegexConverter
from moto.s3.responses import S3Response

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from s3_server import MotoS3, serving_moto, versioned_bucket

from panscan.match.luhn import check_digit
from panscan.model import Item
from panscan.sources import s3 as s3_source
from panscan.sources.s3 import S3Options, enumerate_s3


class _DotAllRegexConverter(RegexConverter):
    def __init__(self, url_map: Any, *items: Any) -> None:
        super().__init__(url_map, *items)
        self.regex = f"(?s:{self.regex})"


_list_object_versions = S3Response.list_object_versions


def _list_object_versions_url_encoded(self: S3Response) -> Any:
    if self.querystring.get("encoding-type", [None])[0] != "url":
        return _list_object_versions(self)
    serialize = self.serialized

    def encoded(action_result: Any) -> Any:
        result = action_result.result
        if isinstance(result, dict):
            for entry in [*result.get("Versions", ()), *result.get("DeleteMarkers", ())]:
                entry["Key"] = quote(entry["Key"], safe="/")
            for entry in result.get("CommonPrefixes", ()):
                entry["Prefix"] = quote(entry["Prefix"], safe="/")
            for name in ("Prefix", "KeyMarker", "NextKeyMarker", "Delimiter"):
                if result.get(name):
                    result[name] = quote(result[name], safe="/")
            result["EncodingType"] = "url"
        return serialize(action_result)

    self.serialized = encoded  # type: ignore[method-assign]
    try:
        return _list_object_versions(self)
    finally:
        del self.serialized


@pytest.fixture(scope="module")
def s3_like_aws() -> Iterator[MotoS3]:
    patches = pytest.MonkeyPatch()
    patches.setattr(werkzeug_app, "RegexConverter", _DotAllRegexConverter)
    patches.setattr(S3Response, "list_object_versions", _list_object_versions_url_encoded)
    try:
        with serving_moto() as handle:  # a server of its own: the shared one has built its routes
            yield handle
    finally:
        patches.undo()


@pytest.fixture
def s3(s3_like_aws: MotoS3, monkeypatch: pytest.MonkeyPatch) -> MotoS3:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_like_aws.endpoint)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    s3_like_aws.reset()
    return s3_like_aws


RNG = random.Random()  # fresh numbers each run: nothing can be special-cased


def make_pan() -> str:
    body = "4" + "".join(RNG.choice("0123456789") for _ in range(14))
    return body + check_digit(body)


def masked(pan: str) -> str:
    return pan[:6] + "******" + pan[-4:]


BUCKET = "hostile-keys"


def run_scan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "panscan", "scan", f"s3://{BUCKET}", "--no-state",
                           "--workers", "2", *args],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ))


def test_keys_with_control_characters_are_each_version_reported_once_masked_and_escaped(s3: MotoS3) -> None:
    name_pan, content_pan = make_pan(), make_pan()
    keys = {
        "newline": f"orders\n{name_pan}.csv",
        "carriage return": "fake\rline.txt",
        "escape": "red\x1b[31malert\x1b[0m.log",
        "delete": "del\x7fete.txt",
        "tab and bell": "tab\tbell\x07.txt",
        "c1 control": "csi\u009b31m.txt",
        "bidi override": "invoice-\u202etxt.exe",
    }
    c = versioned_bucket(s3, BUCKET)
    versions: dict[str, list[str]] = {}
    for key in keys.values():
        versions[key] = [
            c.put_object(Bucket=BUCKET, Key=key, Body=f"old card {content_pan}\n".encode())["VersionId"],
            c.put_object(Bucket=BUCKET, Key=key, Body=b"nothing left\n")["VersionId"],
        ]

    # JSON Lines: every line valid JSON; one item per (key, version); content and name masked.
    jsonl = run_scan("--format", "jsonl")
    assert jsonl.returncode == 1, jsonl.stderr[-2000:]
    records = [json.loads(line) for line in jsonl.stdout.split("\n") if line]
    assert len(records) == jsonl.stdout.count("\n"), "a record spans lines"
    items = [r for r in records if r["type"] == "item"]
    seen = Counter((r["location"], r["version_id"]) for r in items)
    expected_locations = {key: f"s3://{BUCKET}/{key}".replace(name_pan, masked(name_pan)) for key in keys.values()}
    assert seen == Counter({(expected_locations[k], v): 1 for k, vs in versions.items() for v in vs})
    assert all(r["status"] == "complete" for r in items), items
    findings = [r for r in records if r["type"] == "finding"]
    content = [f for f in findings if f["member"] is None]
    assert Counter((f["location"], f["version_id"]) for f in content) == Counter(
        {(expected_locations[k], vs[0]): 1 for k, vs in versions.items()})
    assert {f["masked"] for f in content} == {masked(content_pan)}
    # The key holding a number is a finding of its own in every version (a name is content too).
    named = keys["newline"]
    assert Counter((f["location"], f["version_id"], f["member"], f["masked"]) for f in findings if f not in content) \
        == Counter({(expected_locations[named], v, "(name)", masked(name_pan)): 1 for v in versions[named]})

    # Table: the same rows, with every control character written as an escape.
    table = run_scan("--format", "table")
    assert table.returncode == 1, table.stderr[-2000:]
    out = table.stdout
    for ch in ("\x1b", "\r", "\x7f", "\x07", "\t", "\u009b"):
        assert ch not in out, f"raw {ch!r} in the table report"
    finding_rows = [line for line in out.splitlines() if masked(content_pan) in line]
    assert len(finding_rows) == len(keys), out
    for shown in ("orders\\x0a" + masked(name_pan) + ".csv", "fake\\x0dline.txt", "red\\x1b[31malert\\x1b[0m.log",
                  "del\\x7fete.txt", "tab\\x09bell\\x07.txt", "csi\\x9b31m.txt"):
        assert sum(shown in row for row in finding_rows) == 1, (shown, out)

    # Neither report, nor the log on stderr, holds either number in full.
    for text in (jsonl.stdout, jsonl.stderr, out, table.stderr):
        assert name_pan not in text and content_pan not in text


PREFIX_BUCKET = "hostile-prefixes"
PREFIXES = ["orders\n4111/", "fake\rline/", "red\x1b[31m/", "del\x7f/", "csi\u009b31m/", "invoice-\u202e/",
            "a b+c%20\u00fc&?=/", "//"]


def test_prefixes_with_control_characters_are_fanned_out_and_listed_whole(
        s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> None:
    c = versioned_bucket(s3, PREFIX_BUCKET)
    keys = [f"{prefix}{k}\n{chr(0x1b)}.txt" for prefix in PREFIXES for k in range(2)] + ["top\r.txt"]
    for key in keys:
        for v in range(100):  # 1,700 versions over 9 groups of the top level: fanned out
            s3.put_directly(PREFIX_BUCKET, key, f"v{v}".encode())
    c.delete_object(Bucket=PREFIX_BUCKET, Key=keys[0])
    with monkeypatch.context() as m:
        m.setattr(s3_source, "_fan_out_point", lambda page, prefix: None)
        expected = list(enumerate_s3([f"s3://{PREFIX_BUCKET}"], S3Options()))
    s3.requests.clear()

    fanned = list(enumerate_s3([f"s3://{PREFIX_BUCKET}"], S3Options()))

    assert sorted(fanned, key=repr) == sorted(expected, key=repr)
    assert len(fanned) == len(set(fanned)) == 100 * len(keys)
    assert {i.location for i in fanned if isinstance(i, Item)} == {f"s3://{PREFIX_BUCKET}/{k}" for k in keys}
    listed = {r.query["prefix"][0] for r in s3.requests if "versions" in r.query and "prefix" in r.query}
    assert len(listed & set(PREFIXES)) >= 2, "not fanned out"
