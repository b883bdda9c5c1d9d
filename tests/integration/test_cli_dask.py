"""``panscan scan --engine dask`` from the command line: the same JSON Lines as the local engine,
over an S3 bucket in the moto server (reached over HTTP by the cluster's worker processes)."""

from __future__ import annotations

# ruff: noqa: F811  (the s3 fixture is imported by name; test parameters shadow it on purpose)
import pytest
from s3_server import MotoS3, moto_server, of_type, s3, scan, versioned_bucket  # noqa: F401

from panscan.match.luhn import check_digit

pytest.importorskip("distributed", reason="the dask extra is not installed")


def test_the_dask_engine_reports_what_the_local_engine_reports(s3: MotoS3) -> None:
    c = versioned_bucket(s3, "engines")
    for i in range(12):
        body = f"4929{i:011d}"
        c.put_object(Bucket="engines", Key=f"k{i}.txt", Body=f"card {body + check_digit(body)}\n".encode())
    c.put_object(Bucket="engines", Key="k0.txt", Body=b"replaced\n")

    def comparable(records: list[dict[str, object]]) -> list[str]:
        # --no-state: each run has its own temporary key, so fingerprints differ by design.
        return sorted(repr(sorted((k, v) for k, v in r.items() if k != "fingerprint"))
                      for r in records if r["type"] in ("finding", "item"))

    local = scan("s3://engines")
    dask = scan("s3://engines", "--engine", "dask")
    assert local[0] == dask[0] == 1, dask[2][-2000:]
    assert comparable(local[1]) == comparable(dask[1])
    assert len(of_type(dask[1], "finding")) == 12
