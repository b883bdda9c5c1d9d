"""Evidence bundles: a scan's results, its HTML report, the policy and the pattern-set hash in
one directory, with a manifest of SHA-256 digests signed by HMAC, so an assessor can show the
results were not edited after the scan.

What callers may rely on:

* :func:`create_bundle` makes the directory (mode 0700; it must not exist, or be empty) and
  returns it; the scan writes its files into it (each mode 0600), then :func:`seal` writes
  ``manifest.json`` (every other file's SHA-256 and size, the panscan and pattern-set
  versions, the creation time) and ``manifest.sig`` (hex HMAC-SHA256 of the manifest's exact
  bytes).
* The signing key is derived from the installation's fingerprint key (the state's key, mode
  0600 beside the state database) with a fixed label, so the same secret is never used
  raw for two purposes; whoever holds the key can verify, and could also re-sign — the
  bundle proves integrity against anyone without access to the state directory.
* :func:`verify_bundle` returns the list of problems (empty: intact): a bad signature, a file
  whose digest or size differs, a file missing, a file not in the manifest.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
_LABEL = b"panscan evidence bundle signing key v1"


class EvidenceError(Exception):
    """The bundle cannot be made or read as asked; the message is for the user."""


def signing_key(fingerprint_key: bytes) -> bytes:
    return hmac.new(fingerprint_key, _LABEL, hashlib.sha256).digest()


def create_bundle(directory: Path) -> Path:
    """An empty directory for a bundle, mode 0700."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        if any(directory.iterdir()):
            raise EvidenceError(f"the evidence directory {directory} is not empty: choose a new one "
                                "(a bundle is never written over another)")
    except OSError as exc:
        raise EvidenceError(f"cannot create the evidence directory {directory}: "
                            f"{exc.strerror or type(exc).__name__}") from None
    return directory


def open_file(directory: Path, name: str) -> Any:
    """A new text file of the bundle, mode 0600."""
    fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    return open(fd, "w", encoding="utf-8", errors="backslashreplace", newline="")


def seal(directory: Path, fingerprint_key: bytes, meta: dict[str, Any]) -> dict[str, Any]:
    """Write the manifest of every file now in ``directory`` and its signature."""
    files = {}
    for path in sorted(directory.iterdir()):
        if path.name in (MANIFEST, SIGNATURE) or not path.is_file():
            continue
        files[path.name] = {"sha256": _digest(path), "size": path.stat().st_size}
    manifest = {"type": "panscan-evidence", "version": 1,
                "created": datetime.now(UTC).isoformat(timespec="seconds"), **meta, "files": files}
    data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    with open_file(directory, MANIFEST) as out:
        out.write(data.decode())
    with open_file(directory, SIGNATURE) as out:
        out.write(_sign(fingerprint_key, data) + "\n")
    return manifest


def verify_bundle(directory: Path, fingerprint_key: bytes) -> list[str]:
    """What is wrong with the bundle in ``directory``; empty when it is intact."""
    try:
        data = (directory / MANIFEST).read_bytes()
        signature = (directory / SIGNATURE).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise EvidenceError(f"{directory} is not an evidence bundle ({MANIFEST} and {SIGNATURE} are needed): "
                            f"{getattr(exc, 'strerror', None) or type(exc).__name__}") from None
    problems = []
    if not hmac.compare_digest(signature, _sign(fingerprint_key, data)):
        problems.append(f"{MANIFEST}: the signature does not match (edited, or signed with another key)")
    try:
        files = json.loads(data)["files"]
    except (ValueError, KeyError, TypeError):
        return [*problems, f"{MANIFEST}: not a panscan manifest"]
    for name, expected in sorted(files.items()):
        path = directory / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif path.stat().st_size != expected.get("size") or _digest(path) != expected.get("sha256"):
            problems.append(f"{name}: changed since the bundle was signed")
    for path in sorted(directory.iterdir()):
        if path.name not in files and path.name not in (MANIFEST, SIGNATURE):
            problems.append(f"{path.name}: not in the manifest")
    return problems


def _sign(fingerprint_key: bytes, data: bytes) -> str:
    return hmac.new(signing_key(fingerprint_key), data, hashlib.sha256).hexdigest()


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()
