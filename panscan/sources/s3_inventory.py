"""S3 Inventory reports as the listing: ``s3-inventory://bucket/path/manifest.json``.

A bucket with billions of versions takes days to list with ListObjectVersions; its S3
Inventory report (a ``manifest.json`` naming gzip-compressed CSV data files) already holds
the same listing. :func:`enumerate_inventory` streams it into the ``Item``s a listing of the
source bucket would give.

What callers may rely on:

* :func:`enumerate_inventory` checks the target's form at once (``ValueError`` for anything
  that is not ``s3-inventory://bucket/key``) and returns a lazy generator: the manifest is
  fetched on the first ``next()``, data files one at a time, each streamed (gzip and CSV
  decoded incrementally; a line may hold at most ``MAX_LINE_CHARS`` characters), so memory
  stays small whatever the size of the inventory. Nothing is written to disk.
* One ``Item`` per object version the inventory lists, delete markers left out, each
  equal to what a ListObjectVersions listing gives for that version: ``location``
  ``s3://bucket/key`` (keys are URL-decoded, form encoding, ``+`` is a space),
  ``version_id`` (``"null"`` for the null version, as the API names it; ``None`` when the
  report lists current versions only and so has no version column), ``is_latest`` (True
  for a current-versions-only report), ``size``, ``last_modified`` (POSIX seconds),
  ``storage_class``, ``etag`` (in the API's quoted form, ``'"hex"'``) and ``encryption``
  (the report's ``EncryptionStatus`` when it has that column, e.g. ``SSE-KMS``).
* Everything that cannot be read is an ERROR ``ItemResult`` (source ``s3``) and the
  generator goes on with the next data file: the manifest missing -> ``NOT_FOUND``,
  refused -> ``PERMISSION_DENIED``, not JSON or without the fields used ->
  ``MALFORMED_FILE`` (located at the manifest's ``s3://`` address, and nothing else is
  yielded); a data file missing or refused -> ``NOT_FOUND``/``PERMISSION_DENIED``; whose
  MD5 differs from the manifest's ``MD5checksum``, not gzip, or not CSV of the declared
  schema -> ``MALFORMED_FILE``; cut off while read -> ``READ_ERROR`` (located at the data
  file's ``s3://`` address). A Parquet or ORC report -> one ``UNSUPPORTED_FILE_TYPE``
  error at the manifest (this version reads CSV reports only; pyarrow would be needed).
* A data file's rows are yielded only once its MD5 is known to match: by the GetObject
  ETag when that is the object's MD5 (single-part upload, not SSE-KMS/SSE-C), otherwise by
  a first read that only hashes it. Rows of a file that fails later in its parse (bad
  gzip or CSV further on, a cut connection) have been yielded before the error item that
  follows them; the error still makes coverage incomplete.
* Data files are read from the bucket that holds the manifest (S3 always writes both to
  the same bucket, and a report copied elsewhere keeps working). The client comes from
  ``client_factory("s3")``, called once, in the calling process.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import re
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus

from botocore.exceptions import BotoCoreError, ClientError

from panscan.model import Item, ItemResult, Reason, Status
from panscan.sources.s3 import classify, exclude_matcher, reason_for

SCHEME = "s3-inventory://"
SOURCE = "s3"

#: A manifest lists one entry per data file: even a report of billions of versions has a
#: manifest of a few megabytes. More than this is not a manifest.
MAX_MANIFEST_BYTES = 64 << 20
#: S3 keys are at most 1024 bytes, at most 3 KiB URL-encoded; a CSV line far longer than a
#: row can be is refused rather than buffered (a newline-free data file must not take all
#: memory).
MAX_LINE_CHARS = 64 << 10
_READ_SIZE = 1 << 20

ClientFactory = Callable[[str], Any]

# Columns the Items are built from; "Bucket" and "Key" are required, the rest optional
# (a report has the columns its configuration asked for).
_REQUIRED = ("Bucket", "Key")
_ETAG_IS_MD5 = re.compile(r"[0-9a-f]{32}")


class _Failed(Exception):
    """Internal: a manifest or data file could not be used (becomes an error item)."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class _DataFile:
    key: str
    md5: str | None


@dataclass(frozen=True, slots=True)
class _Manifest:
    file_format: str
    columns: tuple[str, ...]
    files: tuple[_DataFile, ...]


def parse_inventory_url(url: str) -> tuple[str, str]:
    """``(bucket, manifest key)`` of an ``s3-inventory://bucket/key`` target; ``ValueError``
    when it has no bucket or no key."""
    if not url.startswith(SCHEME):
        raise ValueError("an S3 Inventory target starts with s3-inventory://")
    bucket, _, key = url[len(SCHEME):].partition("/")
    if not bucket or not key:
        raise ValueError("an S3 Inventory target is s3-inventory://bucket/path/manifest.json")
    return bucket, key


def enumerate_inventory(manifest_url: str, client_factory: ClientFactory, *, latest_only: bool = False,
                        excludes: tuple[str, ...] = ()) -> Iterator[Item | ItemResult]:
    """The records the report at ``manifest_url`` lists, and an ERROR ``ItemResult`` for
    each part of it that cannot be read (see the module docstring).

    As for an ``s3://`` listing: ``latest_only`` keeps current versions only; a location
    matching one of the fnmatch globs ``excludes`` is ``skipped``/``EXCLUDED``; a version in
    GLACIER or DEEP_ARCHIVE is ``skipped``/``INVALID_OBJECT_STATE`` (never read)."""
    bucket, key = parse_inventory_url(manifest_url)
    return _enumerate(bucket, key, client_factory, latest_only, excludes)


def _enumerate(bucket: str, key: str, client_factory: ClientFactory, latest_only: bool,
               excludes: tuple[str, ...]) -> Iterator[Item | ItemResult]:
    excluded_by = exclude_matcher(excludes)
    client = client_factory("s3")
    try:
        manifest = _read_manifest(client, bucket, key)
    except _Failed as failed:
        yield _error(bucket, key, failed)
        return
    if manifest.file_format != "CSV":
        yield _error(bucket, key, _Failed(
            Reason.UNSUPPORTED_FILE_TYPE,
            f"{manifest.file_format} inventory reports are not read by this version, only CSV ones "
            "(reading Parquet/ORC would need pyarrow); configure the report as CSV",
        ))
        return
    for data in manifest.files:
        try:
            for item in _read_data_file(client, bucket, data, manifest.columns):
                if latest_only and not item.is_latest:
                    continue
                yield classify(item, excluded_by)
        except _Failed as failed:
            yield _error(bucket, data.key, failed)


# --- manifest ---------------------------------------------------------------------------


def _read_manifest(client: Any, bucket: str, key: str) -> _Manifest:
    response = _get(client, bucket, key, "manifest")
    body = response["Body"]
    try:
        raw = _call(lambda: body.read(MAX_MANIFEST_BYTES + 1), bucket, key, "manifest")
    finally:
        body.close()
    if len(raw) > MAX_MANIFEST_BYTES:
        raise _Failed(Reason.MALFORMED_FILE, f"manifest larger than {MAX_MANIFEST_BYTES} bytes: s3://{bucket}/{key}")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _Failed(Reason.MALFORMED_FILE, f"manifest is not JSON: s3://{bucket}/{key}") from None
    return _parse_manifest(doc, f"s3://{bucket}/{key}")


def _parse_manifest(doc: object, where: str) -> _Manifest:
    def bad(what: str) -> _Failed:
        return _Failed(Reason.MALFORMED_FILE, f"manifest {what}: {where}")

    if not isinstance(doc, dict):
        raise bad("is not a JSON object")
    file_format = doc.get("fileFormat")
    schema = doc.get("fileSchema")
    files = doc.get("files")
    if not isinstance(file_format, str) or not isinstance(files, list):
        raise bad("lacks fileFormat or files")
    file_format = file_format.upper()
    columns: tuple[str, ...] = ()
    if file_format == "CSV":
        if not isinstance(schema, str):
            raise bad("lacks fileSchema")
        columns = tuple(c.strip() for c in schema.split(","))
        missing = [c for c in _REQUIRED if c not in columns]
        if missing:
            raise bad(f"fileSchema lacks {', '.join(missing)}")
    entries: list[_DataFile] = []
    for entry in files:
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str) or not entry["key"]:
            raise bad("has a files entry without a key")
        md5 = entry.get("MD5checksum")
        entries.append(_DataFile(entry["key"], md5.lower() if isinstance(md5, str) and md5 else None))
    return _Manifest(file_format, columns, tuple(entries))


# --- data files -------------------------------------------------------------------------


def _read_data_file(client: Any, bucket: str, data: _DataFile, columns: tuple[str, ...]
                    ) -> Iterator[Item]:
    response = _get(client, bucket, data.key, "data file")
    etag = str(response.get("ETag", "")).strip('"')
    if data.md5 is not None and not _etag_is_md5(response, etag):
        # The ETag says nothing about the content: hash the file first, so no row of a
        # file that turns out not to be the one the manifest names is ever yielded.
        _verify_by_reading(response["Body"], bucket, data)
        response = _get(client, bucket, data.key, "data file", if_match=response.get("ETag"))
    elif data.md5 is not None and etag != data.md5:
        response["Body"].close()
        raise _mismatch(bucket, data)
    body = _HashingReader(response["Body"])
    try:
        yield from _rows_to_items(body, bucket, data.key, columns)
    finally:
        body.close()
    if data.md5 is not None and body.hexdigest() != data.md5:
        # The stored object matched, the bytes received did not: corrupted in transit
        # (gzip's own CRC normally catches this first).
        raise _mismatch(bucket, data)


def _etag_is_md5(response: Mapping[str, Any], etag: str) -> bool:
    # S3's ETag is the content MD5 only for single-part uploads without SSE-KMS or SSE-C.
    return (
        _ETAG_IS_MD5.fullmatch(etag) is not None
        and response.get("ServerSideEncryption") not in ("aws:kms", "aws:kms:dsse")
        and "SSECustomerAlgorithm" not in response
    )


def _verify_by_reading(stream: Any, bucket: str, data: _DataFile) -> None:
    reader = _HashingReader(stream)
    try:
        while _call(lambda: reader.read(_READ_SIZE), bucket, data.key, "data file"):
            pass
    finally:
        reader.close()
    if reader.hexdigest() != data.md5:
        raise _mismatch(bucket, data)


def _mismatch(bucket: str, data: _DataFile) -> _Failed:
    return _Failed(Reason.MALFORMED_FILE,
                   f"data file MD5 differs from the manifest's MD5checksum: s3://{bucket}/{data.key}")


def _rows_to_items(body: _HashingReader, bucket: str, key: str, columns: tuple[str, ...]
                   ) -> Iterator[Item]:
    where = f"s3://{bucket}/{key}"
    index = {name: i for i, name in enumerate(columns)}
    reader = csv.reader(_bounded_lines(body, where))
    line = 0
    try:
        for line, row in enumerate(reader, start=1):
            if len(row) != len(columns):
                raise _Failed(Reason.MALFORMED_FILE,
                              f"line {line} has {len(row)} fields, the schema {len(columns)}: {where}")
            item = _row_to_item(row, index)
            if item is not None:
                yield item
    except (gzip.BadGzipFile, EOFError, zlib.error, UnicodeDecodeError, csv.Error) as e:
        raise _Failed(Reason.MALFORMED_FILE,
                      f"not gzip-compressed CSV after line {line} ({type(e).__name__}): {where}") from None
    except ValueError as e:
        # Only field conversions raise a plain ValueError; its text holds no key.
        raise _Failed(Reason.MALFORMED_FILE, f"line {line + 1}: {e}: {where}") from None
    except (BotoCoreError, OSError) as e:
        raise _Failed(Reason.READ_ERROR, f"read failed after line {line} ({type(e).__name__}): {where}") from None


def _bounded_lines(body: _HashingReader, where: str) -> Iterator[str]:
    """The decoded lines of the gzip stream, each at most ``MAX_LINE_CHARS`` characters."""
    text = io.TextIOWrapper(gzip.GzipFile(fileobj=body, mode="rb"), encoding="utf-8", newline="")
    while True:
        line = text.readline(MAX_LINE_CHARS)
        if not line:
            return
        if len(line) == MAX_LINE_CHARS and not line.endswith("\n"):
            raise _Failed(Reason.MALFORMED_FILE, f"a line longer than {MAX_LINE_CHARS} characters: {where}")
        yield line


def _row_to_item(row: list[str], index: Mapping[str, int]) -> Item | None:
    def field(name: str) -> str | None:
        i = index.get(name)
        return row[i] if i is not None else None

    if _flag(field("IsDeleteMarker")):
        return None  # a ListObjectVersions listing reports these apart, and they have no content
    bucket = field("Bucket") or ""
    key = unquote_plus(field("Key") or "", errors="strict")
    version = field("VersionId")
    latest = field("IsLatest")
    size = field("Size")
    modified = field("LastModifiedDate")
    etag = field("ETag")
    return Item(
        location=f"s3://{bucket}/{key}",
        source=SOURCE,
        size=int(size) if size else None,
        last_modified=datetime.fromisoformat(modified).timestamp() if modified else None,
        # The report writes the null version (objects from before versioning) as an empty
        # field; the API, and GetObject's VersionId parameter, call it "null".
        version_id=(version or "null") if version is not None else None,
        is_latest=_flag(latest) if latest is not None else True,
        # ListObjectVersions leaves StorageClass out for STANDARD; the listing fills it in.
        storage_class=field("StorageClass") or "STANDARD",
        etag=(etag if etag.startswith('"') else f'"{etag}"') if etag else None,
        encryption=field("EncryptionStatus") or None,
    )


def _flag(value: str | None) -> bool:
    return value is not None and value.strip().lower() == "true"


class _HashingReader(io.RawIOBase):
    """A readable view of a response body that MD5-hashes every byte passed through."""

    def __init__(self, stream: Any) -> None:
        super().__init__()
        self._stream = stream
        # MD5 because the manifest states MD5; it checks integrity, not authenticity.
        self._md5 = hashlib.md5(usedforsecurity=False)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._stream.read(len(buffer))
        self._md5.update(data)
        n = len(data)
        buffer[:n] = data
        return n

    def hexdigest(self) -> str:
        return self._md5.hexdigest()

    def close(self) -> None:
        if not self.closed:
            self._stream.close()
        super().close()


# --- requests ---------------------------------------------------------------------------


def _get(client: Any, bucket: str, key: str, what: str, if_match: str | None = None) -> Any:
    params = {"Bucket": bucket, "Key": key}
    if if_match:
        params["IfMatch"] = if_match  # the file hashed is the file parsed
    return _call(lambda: client.get_object(**params), bucket, key, what)


def _call(fn: Callable[[], Any], bucket: str, key: str, what: str) -> Any:
    try:
        return fn()
    except (ClientError, BotoCoreError) as e:
        # The listing's vocabulary: a missing manifest or data file is NOT_FOUND, a refused
        # one PERMISSION_DENIED, a KMS key that cannot be used INVALID_ENCRYPTION, a file
        # replaced between the hashing read and the parsing read OBJECT_VERSION_MISMATCH.
        reason, why = reason_for(e, listing=True)
        raise _Failed(reason, f"{what} not read ({why}): s3://{bucket}/{key}") from None
    except OSError as e:
        raise _Failed(Reason.READ_ERROR, f"{what} not read ({type(e).__name__}): s3://{bucket}/{key}") from None


def _error(bucket: str, key: str, failed: _Failed) -> ItemResult:
    return ItemResult(Item(location=f"s3://{bucket}/{key}", source=SOURCE), Status.ERROR,
                      failed.reason, failed.detail)

