"""S3 keys with control characters in the key prefixes a large listing is fanned out over.

moto (5.2) is made to behave as S3 does here, on a server of its own, as in
``test_hostile_s3_keys.py``: S3 honours ``EncodingType=url`` on ListObjectVersions (botocore
always sends it and decodes Keys, markers and CommonPrefixes), moto writes keys raw into the
XML (``\\r`` reads back as ``\\n``, ``\\x1b`` makes the XML invalid); and moto's ``/bucket/key``
route does not match a key holding a newline.
"""

from __future__ import annotations

import sys
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
        with serving_moto() as handle:
            yield handle
    finally:
        patches.undo()


@pytest.fixture
def s3(s3_like_aws: MotoS3, monkeypatch: pytest.MonkeyPatch) -> MotoS3:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_like_aws.endpoint)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    s3_like_aws.reset()
    return s3_like_aws


BUCKET = "hostile-prefixes"
PREFIXES = ["orders\n4111/", "fake\rline/", "red\x1b[31m/", "del\x7f/", "csi\u009b31m/", "invoice-\u202e/",
            "a b+c%20\u00fc&?=/", "//"]


def test_prefixes_with_control_characters_are_fanned_out_and_listed_whole(
        s3: MotoS3, monkeypatch: pytest.MonkeyPatch) -> None:
    c = versioned_bucket(s3, BUCKET)
    keys = [f"{prefix}{k}\n{chr(0x1b)}.txt" for prefix in PREFIXES for k in range(2)] + ["top\r.txt"]
    for key in keys:
        for v in range(100):  # 1,700 versions over 9 groups of the top level: fanned out
            s3.put_directly(BUCKET, key, f"v{v}".encode())
    c.delete_object(Bucket=BUCKET, Key=keys[0])
    with monkeypatch.context() as m:
        m.setattr(s3_source, "_fan_out_point", lambda page, prefix: None)
        expected = list(enumerate_s3([f"s3://{BUCKET}"], S3Options()))
    s3.requests.clear()

    fanned = list(enumerate_s3([f"s3://{BUCKET}"], S3Options()))

    assert sorted(fanned, key=repr) == sorted(expected, key=repr)
    assert len(fanned) == len(set(fanned)) == 100 * len(keys)
    assert {i.location for i in fanned if isinstance(i, Item)} == {f"s3://{BUCKET}/{k}" for k in keys}
    listed = {r.query["prefix"][0] for r in s3.requests if "versions" in r.query and "prefix" in r.query}
    assert len(listed & set(PREFIXES)) >= 2, "not fanned out"
