"""``panscan volumes``: the EBS volumes attached to this instance, their devices, mounts,
filesystems and encryption, and how to mount the unmounted ones read-only.

What callers may rely on:

* :func:`run_volumes` writes to ``stdout`` only and returns 0. It raises
  :class:`panscan.sources.ebs.NotOnEC2` when there is no instance metadata and
  :class:`panscan.sources.ebs.DiscoveryError` (its parent) when DescribeVolumes fails, both
  with a one-line message for the caller to print (exit status 3), and ``ValueError`` for a
  format not in :data:`FORMATS`.
* ``table``: one line naming the instance, then the columns VOLUME, DEVICE, MOUNTS, FS, SIZE,
  ENCRYPTED (``yes``/``NO``), KMS KEY, one row per volume in attachment order. MOUNTS reads
  ``not mounted`` for an attached volume whose device has no mount, ``-`` when its device was
  not found. Below: for each unmounted volume the exact read-only mount commands, then the
  volumes whose device was not found.
* ``jsonl``: an ``{"type": "instance", "instance_id", "region", "availability_zone"}`` record,
  then one :meth:`panscan.sources.ebs.Volume.to_record` per volume.
* Mount points and tags (free text that could hold a card number) are masked
  (``findings.mask.mask_text``) in both formats, and escaped for a terminal in the table.
"""

from __future__ import annotations

import json
from typing import Any, TextIO

from panscan.findings.mask import mask_text
from panscan.sinks.base import display, format_size
from panscan.sinks.table import format_table
from panscan.sources.ebs import Identity, Volume, discover, mount_commands

FORMATS = ("table", "jsonl")
COLUMNS = ("VOLUME", "DEVICE", "MOUNTS", "FS", "SIZE", "ENCRYPTED", "KMS KEY")
NOT_MOUNTED = "not mounted"


def run_volumes(fmt: str, stdout: TextIO) -> int:
    """Discover this instance's volumes and write them to ``stdout`` as ``fmt``; 0."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r} for volumes (choose from {', '.join(FORMATS)})")
    identity, volumes = discover()
    if fmt == "jsonl":
        stdout.write(render_jsonl(identity, volumes))
    else:
        stdout.write(render_table(identity, volumes))
    stdout.flush()
    return 0


def render_jsonl(identity: Identity, volumes: list[Volume]) -> str:
    records: list[dict[str, Any]] = [{"type": "instance", "instance_id": identity.instance_id,
                                      "region": identity.region,
                                      "availability_zone": identity.availability_zone}]
    for volume in volumes:
        record = volume.to_record()
        record["mounts"] = [{**m, "mount_point": mask_text(m["mount_point"]), "device": mask_text(m["device"])}
                            for m in record["mounts"]]
        record["tags"] = {mask_text(k): mask_text(v) for k, v in record["tags"].items()}
        records.append(record)
    # ensure_ascii keeps names that are not UTF-8 (surrogate escapes) writable to any stream.
    return "".join(json.dumps(r, ensure_ascii=True) + "\n" for r in records)


def render_table(identity: Identity, volumes: list[Volume]) -> str:
    where = identity.region + (f", {identity.availability_zone}" if identity.availability_zone else "")
    if not volumes:
        return f"No EBS volumes attached to instance {identity.instance_id} ({where}).\n"
    out = [f"EBS volumes attached to instance {identity.instance_id} ({where})\n", "\n"]
    out.append(format_table(COLUMNS, [_row(v) for v in volumes]))

    unmounted = [v for v in volumes if v.device is not None and not v.mounted]
    if unmounted:
        # noload/norecovery: a journal replay would write to the volume; nouuid: an xfs copy of
        # a filesystem mounted here (a snapshot of this instance's root) would be refused.
        out += ["\n", "Not mounted. To scan, mount read-only without journal replay:\n"]
        for v in unmounted:
            out.append(f"  {v.volume_id}  {v.device}{_attached_as(v)}, {v.fstype or 'filesystem not known'}\n")
            commands = mount_commands(v)
            for mount_point in sorted({c.rsplit(" ", 1)[1] for c in commands}):
                out.append(f"    mkdir -p {mount_point}\n")
            out += [f"    {c}\n" for c in commands]
            if not commands:
                out.append("    no filesystem to mount directly on it\n")

    missing = [v for v in volumes if v.device is None]
    if missing:
        out += ["\n", "Attached, but no block device on this machine matches (no NVMe serial, no Xen device):\n"]
        out += [f"  {v.volume_id}{_attached_as(v)}\n" for v in missing]
    return "".join(out)


def _row(v: Volume) -> list[str]:
    if v.device is None:
        where = "-"
    elif not v.mounts:
        where = NOT_MOUNTED
    else:
        # A filesystem can be mounted at several places (bind mounts); each is listed once.
        where = ", ".join(dict.fromkeys(display(mask_text(m.mount_point)) for m in v.mounts))
    return [v.volume_id, v.device or "not found", where, v.fstype or "-",
            format_size(v.size_gib * 2**30), "yes" if v.encrypted else "NO", v.kms_key_id or "-"]


def _attached_as(v: Volume) -> str:
    return f" (attached as {v.attachment_device})" if v.attachment_device else ""
