"""EBS volumes attached to the EC2 instance panscan runs on: which block device each one is,
where its filesystems are mounted, whether it is encrypted.

What callers may rely on:

* :func:`instance_identity` speaks IMDSv2 only (a token PUT, then one GET with the token): at
  most two requests, each with ``timeout`` for the connection and for every read, and both
  together within ``2 * timeout``. Anything that is not an identity document (refused,
  unreachable, timed out, an HTTP error, a malformed answer, ``AWS_EC2_METADATA_DISABLED``)
  raises :class:`NotOnEC2` with a one-line message. No proxy is used (the metadata service
  is link-local; a ``HTTP_PROXY`` meant for the internet must not receive the token).
* :func:`attached_volumes` raises :class:`DiscoveryError` (of which :class:`NotOnEC2` is a
  kind) with a one-line message when DescribeVolumes cannot be called or is refused.
* The root volume (``Volume.is_root``) is the one EC2 names as the instance's root device
  (DescribeInstances: ``RootDeviceName`` and its block device mapping), or, when that cannot
  be asked (``ec2:DescribeInstances`` not granted), the one holding the mount of ``/``. A
  container's ``/`` is an overlay, not the root volume: only EC2 can say which volume it is.
* Every path that reads the machine lies under :func:`host_root` (``PANSCAN_HOST_ROOT``,
  default ``/``): ``sys/class/nvme``, ``sys/block``, ``proc/self/mountinfo`` and
  ``run/udev/data`` (filesystem types udev recorded). ``lsblk`` is run only when that root
  is ``/``, and only to add what ``/sys`` did not say; the ``/sys`` reading works alone. The
  metadata endpoint is botocore's ``AWS_EC2_METADATA_SERVICE_ENDPOINT``; EC2 is reached through
  :func:`panscan.sources.aws.client`. Nothing is patched to test this module.
* Nothing here writes anything or opens a block device; missing or unreadable ``/sys`` and
  ``/proc`` files mean "not known", never an exception.
* Mount points and device names are ``str`` (bytes that are not UTF-8 carried with
  ``surrogateescape``, as in :mod:`panscan.sources.files`) and may hold any text: whoever
  prints them masks and escapes them.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from panscan.sources import aws

log = logging.getLogger(__name__)

DEFAULT_IMDS_ENDPOINT = "http://169.254.169.254/"
IMDS_IPV6_ENDPOINT = "http://[fd00:ec2::254]/"
# Paths and header names of the IMDSv2 protocol, not secrets.
TOKEN_PATH = "latest/api/token"  # noqa: S105
IDENTITY_PATH = "latest/dynamic/instance-identity/document"
TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"  # noqa: S105
TOKEN_HEADER = "X-aws-ec2-metadata-token"  # noqa: S105
# The token only has to outlive the one GET that follows it.
TOKEN_TTL_SECONDS = 60
# An identity document is well under 1 KiB; anything far larger is not one.
_MAX_DOCUMENT = 64 * 1024
_LSBLK_TIMEOUT = 5.0

# Filesystem types a plain ``mount`` cannot mount read-only as they are (they hold other
# block devices, or no files at all).
_NOT_MOUNTABLE = frozenset({"swap", "LVM2_member", "crypto_LUKS", "linux_raid_member"})
# Read-only is not enough for a journaled filesystem that was not cleanly unmounted (a
# snapshot of a running instance): ext3/4 and xfs replay their journal on mount, which writes
# to the device. noload/norecovery skip the replay; nouuid lets xfs mount a copy of a
# filesystem that is mounted already (a snapshot of this instance's own root).
_MOUNT_OPTIONS = {"ext4": "ro,noload", "ext3": "ro,noload", "xfs": "ro,norecovery,nouuid"}

# NVMe serial of an EBS volume: the volume id without its dash ("vol0123456789abcdef0"),
# padded with spaces in sysfs; some tools print it with the dash.
_SERIAL = re.compile(r"vol-?([0-9a-f]{8}|[0-9a-f]{17})", re.IGNORECASE)
# A namespace of an NVMe controller: nvme1n1, or with native multipath the hidden path
# nvme<subsystem>c<controller>n<namespace>, whose block device is nvme<subsystem>n<namespace>.
_NAMESPACE = re.compile(r"nvme(\d+)(?:c\d+)?n(\d+)")
_MOUNTINFO_ESCAPE = re.compile(rb"\\([0-7]{3})")
_NUMBER = r"\1"  # the partition number of a _partition_pattern match


class DiscoveryError(Exception):
    """EBS discovery cannot go on; the message is one line, for a person."""


class NotOnEC2(DiscoveryError):
    """The instance metadata service did not give an identity document."""


@dataclass(frozen=True)
class Identity:
    instance_id: str
    region: str
    availability_zone: str


@dataclass(frozen=True)
class Mount:
    """One line of ``mountinfo``. ``device`` is the mount source (``/dev/nvme1n1p1``, or a
    name such as ``/dev/root`` or ``tmpfs``); ``major_minor`` is the device number of the
    mounted filesystem (``"259:3"``), empty when not known."""

    mount_point: str
    device: str
    fstype: str
    options: str
    major_minor: str = ""


@dataclass(frozen=True)
class Volume:
    """An EBS volume attached to this instance, as EC2 describes it and as this machine sees it."""

    volume_id: str
    size_gib: int
    volume_type: str
    encrypted: bool
    kms_key_id: str | None
    create_time: float  # seconds since the epoch
    attachment_device: str | None  # the device name EC2 reports (/dev/sdf, /dev/xvda)
    device: str | None  # the block device on this machine (/dev/nvme1n1, /dev/xvdf); None: not found
    mounts: tuple[Mount, ...]  # every mount of the device or of its partitions
    fstype: str | None  # from the mounts, else from udev's record (or lsblk); None: not known
    is_root: bool  # EC2's root device of the instance (else: holds the mount of "/")
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def mounted(self) -> bool:
        return bool(self.mounts)

    def to_record(self) -> dict[str, Any]:
        """The JSON Lines record: ``{"type": "volume", ...}`` with every field, ``create_time``
        as ISO 8601 UTC, ``mounted``, and ``mount_commands`` when not mounted."""
        record: dict[str, Any] = {
            "type": "volume",
            "volume_id": self.volume_id,
            "size_gib": self.size_gib,
            "volume_type": self.volume_type,
            "encrypted": self.encrypted,
            "kms_key_id": self.kms_key_id,
            "create_time": datetime.fromtimestamp(self.create_time, UTC).isoformat().replace("+00:00", "Z"),
            "attachment_device": self.attachment_device,
            "device": self.device,
            "mounts": [asdict(m) for m in self.mounts],
            "fstype": self.fstype,
            "is_root": self.is_root,
            "tags": dict(self.tags),
            "mounted": self.mounted,
        }
        if not self.mounted:
            record["mount_commands"] = mount_commands(self)
        return record


def host_root() -> Path:
    """The prefix of every ``/sys``, ``/proc`` and ``/run`` path read (``PANSCAN_HOST_ROOT``)."""
    return Path(os.environ.get("PANSCAN_HOST_ROOT") or "/")


# --- instance metadata -------------------------------------------------------------------


def imds_endpoint() -> str:
    """The metadata service's base URL, ending in ``/``, chosen as botocore chooses it."""
    endpoint = os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT")
    if not endpoint:
        mode = os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "").lower()
        endpoint = IMDS_IPV6_ENDPOINT if mode == "ipv6" else DEFAULT_IMDS_ENDPOINT
    return endpoint.strip().rstrip("/") + "/"


def instance_identity(timeout: float = 2.0) -> Identity:
    """This instance's id, region and availability zone from IMDSv2 (see the module docstring).
    Raises :class:`NotOnEC2`."""
    endpoint = imds_endpoint()
    if os.environ.get("AWS_EC2_METADATA_DISABLED", "").strip().lower() == "true":
        raise NotOnEC2("instance metadata is disabled (AWS_EC2_METADATA_DISABLED=true): "
                       "unset it to discover EBS volumes")
    if not endpoint.startswith(("http://", "https://")):
        # urllib would also open file: and ftp: URLs; the variable must name a web service.
        raise NotOnEC2(f"AWS_EC2_METADATA_SERVICE_ENDPOINT is not an http(s) URL: {endpoint!r}")
    # An empty ProxyHandler: proxies from the environment never see a metadata request.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + 2 * timeout

    token_request = urllib.request.Request(endpoint + TOKEN_PATH, method="PUT",  # noqa: S310 (checked above)
                                           headers={TOKEN_TTL_HEADER: str(TOKEN_TTL_SECONDS)})
    token = _fetch(opener, token_request, endpoint, timeout, deadline, "token request").decode("ascii", "replace")
    if not token.strip():
        raise NotOnEC2(f"instance metadata at {endpoint} gave an empty token: not an IMDSv2 service")

    document_request = urllib.request.Request(  # noqa: S310 (scheme checked above)
        endpoint + IDENTITY_PATH, headers={TOKEN_HEADER: token.strip()})
    body = _fetch(opener, document_request, endpoint, timeout, deadline, "identity document")
    try:
        document = json.loads(body)
        identity = Identity(str(document["instanceId"]), str(document["region"]),
                            str(document.get("availabilityZone", "")))
    except (ValueError, KeyError, TypeError):
        raise NotOnEC2(f"instance metadata at {endpoint} gave no valid instance identity document "
                       "(instanceId and region expected)") from None
    log.debug("instance %s in %s (%s)", identity.instance_id, identity.region, identity.availability_zone)
    return identity


def _fetch(opener: urllib.request.OpenerDirector, request: urllib.request.Request, endpoint: str,
           timeout: float, deadline: float, what: str) -> bytes:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _unreachable(endpoint, timeout, f"{what}: timed out")
    try:
        with opener.open(request, timeout=min(timeout, remaining)) as response:
            body: bytes = response.read(_MAX_DOCUMENT + 1)
    except urllib.error.HTTPError as e:
        # 401: token missing or refused; 403: IMDS turned off for the instance (or the
        # request came through a proxy); 404: not a metadata service at all.
        raise NotOnEC2(f"instance metadata at {endpoint} refused the {what} (HTTP {e.code} {e.reason}): "
                       "not on EC2, or IMDS disabled or restricted") from None
    except urllib.error.URLError as e:
        raise _unreachable(endpoint, timeout, f"{what}: {_describe(e.reason)}") from None
    except (OSError, http.client.HTTPException) as e:
        # A timeout or reset while reading the answer is not wrapped in URLError.
        raise _unreachable(endpoint, timeout, f"{what}: {_describe(e)}") from None
    if len(body) > _MAX_DOCUMENT:
        raise NotOnEC2(f"instance metadata at {endpoint} gave an oversized answer to the {what}")
    return body


def _unreachable(endpoint: str, timeout: float, reason: str) -> NotOnEC2:
    hint = ""
    if reason.startswith("token request") and "timed out" in reason:
        # IMDSv2 answers a PUT with an IP TTL of the instance's hop limit (1 by default), so
        # from inside a container the token never arrives.
        hint = "; inside a container the instance's metadata hop limit may need to be 2"
    return NotOnEC2(f"instance metadata not reachable at {endpoint} within {timeout:g} s: "
                    f"not on EC2, or IMDS disabled ({reason}{hint})")


def _describe(error: object) -> str:
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return str(error) or type(error).__name__


# --- EC2 -------------------------------------------------------------------------------


def attached_volumes(identity: Identity) -> list[dict[str, Any]]:
    """DescribeVolumes for the volumes attached to ``identity``'s instance (every page), as
    boto3 returns them. Raises :class:`DiscoveryError`."""
    from botocore.exceptions import BotoCoreError, ClientError

    ec2 = aws.client("ec2", region=identity.region)
    volumes: list[dict[str, Any]] = []
    try:
        paginator = ec2.get_paginator("describe_volumes")
        pages = paginator.paginate(Filters=[{"Name": "attachment.instance-id", "Values": [identity.instance_id]}])
        for page in pages:
            volumes.extend(page.get("Volumes", []))
    except ClientError as e:
        error = e.response.get("Error", {})
        raise DiscoveryError(f"DescribeVolumes for instance {identity.instance_id} in {identity.region} was "
                             f"refused: {error.get('Code', '?')}: {error.get('Message', '')}".rstrip(": ")) from None
    except BotoCoreError as e:
        raise DiscoveryError(f"DescribeVolumes for instance {identity.instance_id} in {identity.region} "
                             f"failed: {e}") from None
    return volumes


def root_volume_id(identity: Identity) -> str | None:
    """The id of the volume EC2 attached as ``identity``'s root device (DescribeInstances:
    the block device mapping of ``RootDeviceName``); None when EC2 cannot be asked or names
    none (an instance-store root). Never raises: discovery goes on without it."""
    from botocore.exceptions import BotoCoreError, ClientError

    ec2 = aws.client("ec2", region=identity.region)
    try:
        reservations = ec2.describe_instances(InstanceIds=[identity.instance_id]).get("Reservations", [])
    except (ClientError, BotoCoreError) as e:
        log.debug("DescribeInstances for %s failed (%s): the root volume is the one mounted at /",
                  identity.instance_id, type(e).__name__)
        return None
    for reservation in reservations:
        for instance in reservation.get("Instances", []):
            root = instance.get("RootDeviceName")
            for mapping in instance.get("BlockDeviceMappings", []):
                if root and _same_attachment(mapping.get("DeviceName"), root):
                    volume_id = mapping.get("Ebs", {}).get("VolumeId")
                    return str(volume_id) if volume_id else None
    return None


def _same_attachment(a: str | None, b: str) -> bool:
    """Whether two attachment names are the same device: EC2 may spell a name /dev/sdf in one
    answer and xvdf in another (the Xen name of the same attachment)."""
    def name(device: str) -> str:
        base = device.rsplit("/", 1)[-1]
        return "sd" + base[3:] if base.startswith("xvd") else base

    return a is not None and name(a) == name(b)


# --- this machine's block devices ----------------------------------------------------------


def volume_id_from_serial(serial: str) -> str | None:
    """The EBS volume id an NVMe serial number names (``vol0123...`` → ``vol-0123...``), or
    None for any other device (instance store, a disk that is not EBS)."""
    found = _SERIAL.fullmatch(serial.strip())
    return f"vol-{found[1].lower()}" if found else None


def block_devices(attachments: Mapping[str, str] | None = None) -> dict[str, str]:
    """Volume id → block device on this machine (``/dev/nvme1n1``, ``/dev/xvdf``).

    NVMe devices (Nitro instances) are named by their controller's serial number in
    ``sys/class/nvme/*/serial``; Xen devices only by the attachment name EC2 reports, so
    ``attachments`` (volume id → ``/dev/sdf``) finds ``/dev/xvdf`` when ``sys/block/xvdf``
    exists. Volumes found neither way are absent.
    """
    root = host_root()
    found: dict[str, str] = {}
    nvme = root / "sys/class/nvme"
    for controller in sorted(_list_dir(nvme), key=_natural):
        serial = _read(nvme / controller / "serial")
        volume_id = volume_id_from_serial(serial) if serial is not None else None
        if volume_id is None:
            continue
        namespace = _nvme_namespace(root, controller)
        if namespace is not None:
            found.setdefault(volume_id, "/dev/" + namespace)
    for name, (serial, _) in _lsblk().items():
        volume_id = volume_id_from_serial(serial) if serial else None
        if volume_id is not None:
            found.setdefault(volume_id, "/dev/" + name)
    for volume_id, attached in (attachments or {}).items():
        if volume_id not in found:
            xen = _xen_device(root, attached)
            if xen is not None:
                found[volume_id] = xen
    return found


def _nvme_namespace(root: Path, controller: str) -> str | None:
    namespaces = []
    for entry in _list_dir(root / "sys/class/nvme" / controller):
        match = _NAMESPACE.fullmatch(entry)
        if match:
            namespaces.append((int(match[2]), f"nvme{match[1]}n{match[2]}"))
    if namespaces:
        return min(namespaces)[1]  # EBS volumes have one namespace; n1 if ever more
    fallback = controller + "n1"
    return fallback if (root / "sys/block" / fallback).is_dir() else None


def _xen_device(root: Path, attached: str) -> str | None:
    """Xen's blkfront names /dev/sdf as xvdf (and /dev/xvdf as itself). An attachment named
    like a partition (/dev/sda1, the old root default) is a whole disk xvda1 on paravirtual
    instances, and the disk xvda (with a partition xvda1) on HVM ones."""
    name = attached.rsplit("/", 1)[-1]
    if name.startswith("sd"):
        name = "xvd" + name[2:]
    if not name.startswith("xvd"):
        return None
    if (root / "sys/block" / name).is_dir():
        return "/dev/" + name
    disk = name.rstrip("0123456789")
    if disk != name and (root / "sys/block" / disk).is_dir():
        return "/dev/" + disk
    return None


def partitions(disk: str) -> list[str]:
    """The partitions of block device ``disk`` (``nvme1n1`` → ``["nvme1n1p1", ...]``) listed
    in ``sys/block/<disk>/``, in partition order."""
    pattern = _partition_pattern(disk)
    found = [e for e in _list_dir(host_root() / "sys/block" / disk) if pattern.fullmatch(e)]
    return sorted(found, key=_natural)


def _partition_pattern(disk: str) -> re.Pattern[str]:
    # The kernel puts a "p" between a disk name ending in a digit and the partition number
    # (nvme1n1p1, but xvdf1), so nvme1n10 is another disk, not a partition of nvme1n1.
    return re.compile(re.escape(disk) + (r"p(\d+)" if disk[-1:].isdigit() else r"(\d+)"))


def mounts() -> list[Mount]:
    """Every mount in ``proc/self/mountinfo`` under the host root, in file order; [] when it
    cannot be read."""
    path = host_root() / "proc/self/mountinfo"
    try:
        data = path.read_bytes()
    except OSError as e:
        log.debug("cannot read %s: %s", path, e)
        return []
    return parse_mountinfo(data)


def parse_mountinfo(data: bytes) -> list[Mount]:
    """``mountinfo`` lines (proc(5)) as :class:`Mount` values; malformed lines are left out.
    The kernel writes space, tab, newline and backslash in paths as octal escapes
    (``\\040``); they are decoded."""
    found = []
    for line in data.splitlines():
        fields = line.split(b" ")
        # ID PARENT MAJOR:MINOR ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS
        try:
            separator = fields.index(b"-", 6)
        except ValueError:
            continue
        if len(fields) < separator + 3:
            continue
        found.append(Mount(mount_point=_unescape(fields[4]), device=_unescape(fields[separator + 2]),
                           fstype=_unescape(fields[separator + 1]), options=_unescape(fields[5]),
                           major_minor=fields[2].decode("ascii", "replace")))
    return found


def _unescape(raw: bytes) -> str:
    return _MOUNTINFO_ESCAPE.sub(lambda m: bytes([int(m[1], 8) & 0xFF]), raw).decode("utf-8", "surrogateescape")


def _device_numbers(disk: str) -> set[str]:
    """Device numbers (``259:3``) of ``disk``, its partitions, and the device-mapper devices
    built on them (LVM, LUKS): a mount of any of them is a mount of this volume, whatever name
    its source has in ``mountinfo`` (``/dev/root``, ``/dev/mapper/vg-data``)."""
    root = host_root()
    base = root / "sys/block" / disk
    numbers: set[str] = set()
    for directory in [base, *(base / p for p in partitions(disk))]:
        number = _read(directory / "dev")
        if number:
            numbers.add(number.strip())
        for holder in _list_dir(directory / "holders"):
            number = _read(root / "sys/block" / holder / "dev")
            if number:
                numbers.add(number.strip())
    return numbers


def _mounts_of(device: str, all_mounts: Iterable[Mount]) -> tuple[Mount, ...]:
    disk = device.rsplit("/", 1)[-1]
    pattern = _partition_pattern(disk)
    numbers = _device_numbers(disk)

    def ours(m: Mount) -> bool:
        if m.device.startswith("/dev/"):
            name = m.device.rsplit("/", 1)[-1]
            if name == disk or pattern.fullmatch(name):
                return True
        return bool(m.major_minor) and m.major_minor in numbers

    return tuple(m for m in all_mounts if ours(m))


def _udev_fstype(number: str | None) -> str | None:
    if not number:
        return None
    record = _read(host_root() / "run/udev/data" / f"b{number.strip()}")
    for line in (record or "").splitlines():
        if line.startswith("E:ID_FS_TYPE="):
            return line.partition("=")[2].strip() or None
    return None


def _fstype_of(disk: str, name: str) -> str | None:
    """The filesystem type udev (or lsblk) recorded for ``name``, the disk itself or one of
    its partitions."""
    base = host_root() / "sys/block" / disk
    directory = base if name == disk else base / name
    found = _udev_fstype(_read(directory / "dev"))
    if found is None:
        found = _lsblk().get(name, (None, None))[1]
    return found


def _lsblk() -> dict[str, tuple[str | None, str | None]]:
    """Block device name → (serial, fstype) from ``lsblk -J``, only on the real root; {} when
    lsblk is missing or fails (it adds to /sys, /sys does not depend on it)."""
    if host_root() != Path("/"):
        return {}
    lsblk = shutil.which("lsblk")
    if lsblk is None:
        return {}
    try:
        run = subprocess.run([lsblk, "-J", "-o", "NAME,SERIAL,FSTYPE"], capture_output=True,
                             timeout=_LSBLK_TIMEOUT, check=True)
        tree = json.loads(run.stdout)
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        log.debug("lsblk gave nothing: %s", e)
        return {}
    found: dict[str, tuple[str | None, str | None]] = {}
    pending = list(tree.get("blockdevices") or [])
    while pending:
        entry = pending.pop()
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            found[entry["name"]] = (entry.get("serial"), entry.get("fstype"))
            pending.extend(entry.get("children") or [])
    return found


# --- the join ------------------------------------------------------------------------------


def discover(timeout: float = 2.0) -> tuple[Identity, list[Volume]]:
    """This instance and its attached volumes, each with its device, mounts and filesystem,
    ordered by attachment device. Raises :class:`NotOnEC2` / :class:`DiscoveryError`."""
    identity = instance_identity(timeout)
    described = attached_volumes(identity)
    attachments: dict[str, str] = {}
    for raw in described:
        for attachment in raw.get("Attachments", []):
            if attachment.get("InstanceId") == identity.instance_id and attachment.get("Device"):
                attachments[raw["VolumeId"]] = attachment["Device"]
    devices = block_devices(attachments)
    all_mounts = mounts()
    root = root_volume_id(identity) if described else None
    volumes = [_volume(raw, attachments.get(raw["VolumeId"]), devices.get(raw["VolumeId"]), all_mounts, root)
               for raw in described]
    volumes.sort(key=lambda v: (_natural(v.attachment_device or "~"), v.volume_id))
    return identity, volumes


def _volume(raw: Mapping[str, Any], attached: str | None, device: str | None, all_mounts: list[Mount],
            root_volume: str | None) -> Volume:
    found = _mounts_of(device, all_mounts) if device else ()
    fstype = found[0].fstype if found else None
    if fstype is None and device:
        disk = device.rsplit("/", 1)[-1]
        for name in [disk, *partitions(disk)]:
            fstype = _fstype_of(disk, name)
            if fstype:
                break
    created = raw.get("CreateTime")
    return Volume(
        volume_id=raw["VolumeId"],
        size_gib=int(raw.get("Size", 0)),
        volume_type=str(raw.get("VolumeType", "")),
        encrypted=bool(raw.get("Encrypted", False)),
        kms_key_id=raw.get("KmsKeyId") or None,
        create_time=created.timestamp() if isinstance(created, datetime) else 0.0,
        attachment_device=attached,
        device=device,
        mounts=found,
        fstype=fstype,
        # EC2's word first: inside a container "/" is an overlay and the root volume's
        # filesystem is mounted only under bind mounts (/etc/hosts...).
        is_root=raw["VolumeId"] == root_volume if root_volume else any(m.mount_point == "/" for m in found),
        tags={str(t["Key"]): str(t.get("Value", "")) for t in raw.get("Tags", []) if "Key" in t},
    )


def mount_commands(volume: Volume) -> list[str]:
    """Read-only ``mount`` command lines for an attached volume none of whose filesystems is
    mounted: one per filesystem (each partition listed in ``sys/block/<dev>/``, else the whole
    device), at ``/mnt/<volume id>`` (``/mnt/<volume id>-p<N>`` when there are several).
    ext3/ext4 get ``ro,noload``, xfs ``ro,norecovery,nouuid``, anything else ``ro``; swap and
    volume-manager members get none. [] for a mounted volume or one whose device was not found.
    The mount point directories must exist."""
    if volume.mounts or volume.device is None:
        return []
    disk = volume.device.rsplit("/", 1)[-1]
    parts = partitions(disk)
    if len(parts) <= 1:
        name = parts[0] if parts else disk
        fstype = _fstype_of(disk, name) if parts else volume.fstype or _fstype_of(disk, disk)
        targets = [(name, fstype, f"/mnt/{volume.volume_id}")]
    else:
        pattern = _partition_pattern(disk)
        targets = [(p, _fstype_of(disk, p), f"/mnt/{volume.volume_id}-p{pattern.sub(_NUMBER, p)}") for p in parts]
        if any(fstype for _, fstype, _ in targets):
            # A partition with no recorded filesystem beside ones with one is a BIOS boot or
            # empty partition: a mount command for it would only fail.
            targets = [t for t in targets if t[1]]
    return [f"mount -o {_MOUNT_OPTIONS.get(fstype or '', 'ro')} /dev/{name} {mount_point}"
            for name, fstype, mount_point in targets if fstype not in _NOT_MOUNTABLE]


# --- small readers ---------------------------------------------------------------------------


def _read(path: Path) -> str | None:
    try:
        return path.read_text("utf-8", "replace")
    except OSError:
        return None


def _list_dir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _natural(name: str) -> tuple[Any, ...]:
    """Sort key putting nvme2 before nvme10 and sdf before sdg."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))
