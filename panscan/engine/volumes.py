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
  not found (DEVICE ``not found``). Below: for each unmounted volume the exact read-only mount
  commands, then the volumes whose device was not found, then the root volume.
* ``jsonl``: an ``{"type": "instance", "instance_id", "region", "availability_zone"}`` record,
  then one :meth:`panscan.sources.ebs.Volume.to_record` per volume.
* Mount points and tags (free text that could hold a card number) are masked
  (``findings.mask.mask_text``) in both formats, and escaped for a terminal in the table.

``scan --volumes``: :func:`plan_volume_scan` says what a scan does with the attached volumes
(:class:`VolumeScan`): the mount points it scans, and one ``skipped`` item
(:func:`not_scanned`) for every attached volume it does not scan, so that a volume attached
but not read is a gap in coverage (exit status 2), never a line on stderr only. The words are
the table's: ``not mounted`` (``VOLUME_NOT_MOUNTED``, with the mount commands above) and
device ``not found`` (``DEVICE_NOT_FOUND``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TextIO

from panscan.findings.mask import mask_text
from panscan.model import Item, ItemResult, Reason, Status
from panscan.sinks.base import display, format_size
from panscan.sinks.table import format_table
from panscan.sources.ebs import Identity, Volume, discover, mount_commands

FORMATS = ("table", "jsonl")
COLUMNS = ("VOLUME", "DEVICE", "MOUNTS", "FS", "SIZE", "ENCRYPTED", "KMS KEY")
#: The words for an attached volume that is not read, in every table (here, and the scan's
#: EBS section) and in the details of its item: MOUNTS and DEVICE.
NOT_MOUNTED = "not mounted"
NOT_FOUND = "not found"
#: ``Item.source`` and location scheme of an attached volume reported as a whole (an item
#: that was not scanned: it has no files of its own to report).
VOLUME_SOURCE = "ebs"
VOLUME_SCHEME = "ebs-volume://"
_NO_DEVICE = "no block device on this machine matches (no NVMe serial, no Xen device)"


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
            out += [f"    {line}\n" for line in _mkdirs(commands) + commands]
            if not commands:
                out.append("    no filesystem to mount directly on it\n")

    missing = [v for v in volumes if v.device is None]
    if missing:
        out += ["\n", f"Device not found: attached, but {_NO_DEVICE}:\n"]
        out += [f"  {v.volume_id}{_attached_as(v)}\n" for v in missing]

    roots = [v.volume_id for v in volumes if v.is_root]
    if roots:
        out += ["\n", f"Root volume: {', '.join(roots)} (scan --volumes reads it only with --include-root)\n"]
    return "".join(out)


def _mkdirs(commands: list[str]) -> list[str]:
    """``mkdir -p`` for each mount point the mount commands use (mount needs it to exist)."""
    return [f"mkdir -p {point}" for point in sorted({c.rsplit(" ", 1)[1] for c in commands})]


def _row(v: Volume) -> list[str]:
    if v.device is None:
        where = "-"
    elif not v.mounts:
        where = NOT_MOUNTED
    else:
        # A filesystem can be mounted at several places (bind mounts); each is listed once.
        where = ", ".join(dict.fromkeys(display(mask_text(m.mount_point)) for m in v.mounts))
    return [v.volume_id, v.device or NOT_FOUND, where, v.fstype or "-",
            format_size(v.size_gib * 2**30), "yes" if v.encrypted else "NO", v.kms_key_id or "-"]


def _attached_as(v: Volume) -> str:
    return f" (attached as {v.attachment_device})" if v.attachment_device else ""


# --- scan --volumes ----------------------------------------------------------------------


@dataclass(frozen=True)
class VolumeScan:
    """What ``scan --volumes`` does with the volumes attached to this instance.

    ``volumes``: the volumes in scope (every attached one; the root one only with
    ``--include-root``), for the report's EBS section. ``mounted``: mount point → volume id,
    each mount point a target of the scan. ``not_scanned``: one ``skipped`` item per attached
    volume that is not read (:func:`not_scanned`), in attachment order, for the scan to report
    before anything else."""

    volumes: tuple[Volume, ...]
    mounted: dict[str, str]
    not_scanned: tuple[ItemResult, ...]


def plan_volume_scan(include_root: bool) -> VolumeScan:
    """Discover this instance's volumes (:func:`panscan.sources.ebs.discover`: raises
    ``DiscoveryError`` off EC2) and say what the scan does with each."""
    _, volumes = discover()
    return volume_scan(volumes, include_root)


def volume_scan(volumes: Iterable[Volume], include_root: bool) -> VolumeScan:
    """:class:`VolumeScan` of ``volumes`` (as :func:`discover` gives them)."""
    attached = list(volumes)
    in_scope = tuple(v for v in attached if include_root or not v.is_root)
    mounted = {point: v.volume_id for v in in_scope for point in scanned_mounts(v)}
    skipped = tuple(r for r in (not_scanned(v, include_root) for v in attached) if r is not None)
    return VolumeScan(in_scope, mounted, skipped)


def scanned_mounts(volume: Volume) -> list[str]:
    """Where a volume's filesystems are mounted, each filesystem once (a bind mount of the
    same filesystem elsewhere would be scanned twice)."""
    seen: dict[str, str] = {}
    for m in volume.mounts:
        seen.setdefault(m.device, m.mount_point)
    return list(seen.values())


def not_scanned(volume: Volume, include_root: bool) -> ItemResult | None:
    """The ``skipped`` item of an attached volume that ``scan --volumes`` does not read, None
    for one it reads (a mounted volume in scope):

    * the root volume without ``--include-root``: ``EXCLUDED`` (left out on purpose);
    * no block device found for it: ``DEVICE_NOT_FOUND``;
    * a device, none of its filesystems mounted: ``VOLUME_NOT_MOUNTED``, the detail giving
      the read-only mount commands of ``panscan volumes``.

    Location ``ebs-volume://vol-...``, source ``ebs``, the volume's size and id; no time (a
    volume's creation is not the age of its data)."""
    item = Item(VOLUME_SCHEME + volume.volume_id, VOLUME_SOURCE, size=volume.size_gib * 2**30,
                volume_id=volume.volume_id)
    if volume.is_root and not include_root:
        return ItemResult(item, Status.SKIPPED, Reason.EXCLUDED,
                          "the root volume: scan --volumes reads it only with --include-root")
    if volume.device is None:
        return ItemResult(item, Status.SKIPPED, Reason.DEVICE_NOT_FOUND,
                          f"device {NOT_FOUND}: attached{_attached_as(volume)}, but {_NO_DEVICE}; "
                          "not scanned (see 'panscan volumes')")
    if volume.mounted:
        return None
    return ItemResult(item, Status.SKIPPED, Reason.VOLUME_NOT_MOUNTED, _unmounted_detail(volume))


def _unmounted_detail(volume: Volume) -> str:
    where = f"{volume.device}{_attached_as(volume)}, {volume.fstype or 'filesystem not known'}"
    commands = mount_commands(volume)
    if not commands:
        return f"{NOT_MOUNTED} ({where}), and no filesystem to mount directly on it: not scanned"
    # One shell line per filesystem: the directory made, then mounted read-only without a
    # journal replay, as 'panscan volumes' prints them.
    steps = [f"mkdir -p {c.rsplit(' ', 1)[1]} && {c}" for c in commands]
    return (f"{NOT_MOUNTED} ({where}): not scanned; to scan it, mount it read-only and run the scan "
            f"again: {'; '.join(steps)}")
