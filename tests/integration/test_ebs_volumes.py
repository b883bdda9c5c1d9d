"""EBS discovery against real servers on loopback: moto EC2 (and KMS) behind the moto server, a
fake IMDSv2 service, and a fake host tree (``sys/``, ``proc/self/mountinfo``, ``run/udev``)
in a temp directory, pointed at through ``PANSCAN_HOST_ROOT`` and
``AWS_EC2_METADATA_SERVICE_ENDPOINT``; nothing is patched."""
# ruff: noqa: F811

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

# Fixtures are imported by name (pytest finds them in the module's namespace); the tests'
# parameters shadow the imports on purpose.
from fake_imds import IDENTITY_PATH, TOKEN_HEADER, TOKEN_PATH, TTL_HEADER, FakeIMDS, imds  # noqa: F401
from s3_server import MotoS3, moto_server, of_type, s3  # noqa: F401

from panscan.engine.volumes import COLUMNS, plan_volume_scan, run_volumes
from panscan.sources import ebs
from panscan.sources.ebs import Mount, NotOnEC2, Volume

AZ = "us-east-1a"
AMI = "ami-12c6146b"  # one of moto's built-in images


def serial_of(volume_id: str) -> str:
    """The NVMe serial EBS gives a volume: its id without the dash, space-padded to 20."""
    return f"{volume_id.replace('-', ''):<20}\n"


def mountinfo_line(n: int, major_minor: str, mount_point: str, source: str, fstype: str) -> str:
    escaped = mount_point.replace("\\", "\\134").replace(" ", "\\040")
    return f"{20 + n} 1 {major_minor} / {escaped} rw,relatime shared:{n} - {fstype} {source} rw\n"


@dataclass
class Host:
    """The instance moto knows and the machine the fake tree describes."""

    root: Path
    instance_id: str
    kms_key: str
    root_volume: str  # moto's root volume, /dev/sda1 → nvme0n1, partition p1 mounted at /
    encrypted: str  # /dev/sdf → nvme1n1, partition p1 (ext4) mounted at data_a
    plain: str  # /dev/sdg → nvme2n1 (xfs, no partitions) mounted at data_b
    unmounted: str  # /dev/sdh → nvme3n1, xfs recorded by udev, not mounted
    absent: str  # /dev/sdi → no device on this machine
    data_a: Path
    data_b: Path


def make_dir(path: Path, files: dict[str, str] | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, text in (files or {}).items():
        (path / name).write_text(text)
    return path


def ec2_client(s3: MotoS3, service: str = "ec2") -> Any:
    return boto3.client(service, endpoint_url=s3.endpoint, region_name="us-east-1",
                        config=Config(retries={"mode": "standard", "max_attempts": 2}))


@pytest.fixture
def host(s3: MotoS3, imds: FakeIMDS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Host:
    # The s3 fixture turns instance metadata off for S3 tests; these tests want it.
    monkeypatch.delenv("AWS_EC2_METADATA_DISABLED", raising=False)
    ec2 = ec2_client(s3)
    instance = ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1, InstanceType="t3.micro",
                                 Placement={"AvailabilityZone": AZ})["Instances"][0]["InstanceId"]
    imds.instance_id = instance
    imds.availability_zone = AZ
    key = ec2_client(s3, "kms").create_key(Description="ebs")["KeyMetadata"]["Arn"]

    def volume(device: str, size: int, **kwargs: Any) -> str:
        made = ec2.create_volume(AvailabilityZone=AZ, Size=size, **kwargs)["VolumeId"]
        ec2.attach_volume(VolumeId=made, InstanceId=instance, Device=device)
        return str(made)

    encrypted = volume("/dev/sdf", 10, VolumeType="gp3", Encrypted=True, KmsKeyId=key,
                       TagSpecifications=[{"ResourceType": "volume", "Tags": [{"Key": "Name", "Value": "payments"}]}])
    plain = volume("/dev/sdg", 20, VolumeType="gp2")
    unmounted = volume("/dev/sdh", 5, VolumeType="gp2")
    absent = volume("/dev/sdi", 1, VolumeType="gp2")
    (root_volume,) = [v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]
                      if v["Attachments"] and v["Attachments"][0]["Device"] == "/dev/sda1"]

    data_a = make_dir(tmp_path / "mnt" / "data a", {"orders.csv": "id,card\n1,4111 1111 1111 1111\n"})
    data_b = make_dir(tmp_path / "mnt" / "data_b", {"notes.txt": "nothing here\n"})
    root = tmp_path / "host"
    for n, vol in enumerate([root_volume, encrypted, plain, unmounted]):
        controller = make_dir(root / "sys/class/nvme" / f"nvme{n}")
        (controller / "serial").write_text(serial_of(vol))
        make_dir(controller / f"nvme{n}n1")
        disk = make_dir(root / "sys/block" / f"nvme{n}n1")
        (disk / "dev").write_text(f"259:{2 * n}\n")
    # Partitions, as the kernel lists them under the disk.
    (make_dir(root / "sys/block/nvme0n1/nvme0n1p1") / "dev").write_text("259:1\n")
    (make_dir(root / "sys/block/nvme1n1/nvme1n1p1") / "dev").write_text("259:3\n")
    # Instance store: an NVMe device that is not EBS.
    make_dir(root / "sys/class/nvme/nvme4/nvme4n1")
    (root / "sys/class/nvme/nvme4/serial").write_text("AWS1A2B3C4D5E6F7G8H9\n")
    make_dir(root / "run/udev/data")
    (root / "run/udev/data/b259:6").write_text("S:disk/by-id/nvme-Amazon_Elastic_Block_Store\nE:ID_FS_TYPE=xfs\n")
    make_dir(root / "proc/self")
    (root / "proc/self/mountinfo").write_text(
        mountinfo_line(1, "259:1", "/", "/dev/nvme0n1p1", "xfs")
        + mountinfo_line(2, "0:22", "/run", "tmpfs", "tmpfs")
        + mountinfo_line(3, "259:3", str(data_a), "/dev/nvme1n1p1", "ext4")
        + mountinfo_line(4, "259:4", str(data_b), "/dev/nvme2n1", "xfs")
        # Another disk whose name starts like nvme1n1: not one of its partitions.
        + mountinfo_line(5, "259:9", "/srv/other", "/dev/nvme1n10", "ext4")
    )
    monkeypatch.setenv("PANSCAN_HOST_ROOT", str(root))
    return Host(root, instance, key, root_volume, encrypted, plain, unmounted, absent, data_a, data_b)


# --- discovery: the join -------------------------------------------------------------------


def test_discover_joins_volumes_to_devices_mounts_and_encryption(host: Host, imds: FakeIMDS) -> None:
    identity, volumes = ebs.discover()
    assert identity == ebs.Identity(host.instance_id, "us-east-1", AZ)
    by_id = {v.volume_id: v for v in volumes}
    assert set(by_id) == {host.root_volume, host.encrypted, host.plain, host.unmounted, host.absent}
    # Ordered by attachment device.
    assert [v.attachment_device for v in volumes] == ["/dev/sda1", "/dev/sdf", "/dev/sdg", "/dev/sdh", "/dev/sdi"]

    root = by_id[host.root_volume]
    assert (root.device, root.is_root, root.fstype) == ("/dev/nvme0n1", True, "xfs")
    assert [m.mount_point for m in root.mounts] == ["/"]

    encrypted = by_id[host.encrypted]
    assert encrypted.device == "/dev/nvme1n1"
    assert encrypted.mounts == (Mount(str(host.data_a), "/dev/nvme1n1p1", "ext4", "rw,relatime", "259:3"),)
    assert (encrypted.encrypted, encrypted.kms_key_id, encrypted.fstype) == (True, host.kms_key, "ext4")
    assert (encrypted.size_gib, encrypted.volume_type, encrypted.is_root) == (10, "gp3", False)
    assert encrypted.tags == {"Name": "payments"}
    assert encrypted.create_time > 0

    plain = by_id[host.plain]
    assert (plain.device, plain.encrypted, plain.kms_key_id, plain.fstype) == ("/dev/nvme2n1", False, None, "xfs")
    assert [m.mount_point for m in plain.mounts] == [str(host.data_b)]

    unmounted = by_id[host.unmounted]
    assert (unmounted.device, unmounted.mounts, unmounted.fstype) == ("/dev/nvme3n1", (), "xfs")
    assert ebs.mount_commands(unmounted) == [
        f"mount -o ro,norecovery,nouuid /dev/nvme3n1 /mnt/{host.unmounted}"]

    absent = by_id[host.absent]
    assert (absent.device, absent.mounts, absent.fstype) == (None, (), None)
    assert ebs.mount_commands(absent) == []


def test_volume_record_has_every_field_and_mount_commands_only_when_unmounted(host: Host) -> None:
    _, volumes = ebs.discover()
    records = {v.volume_id: v.to_record() for v in volumes}
    encrypted = records[host.encrypted]
    assert encrypted["type"] == "volume"
    assert encrypted["mounted"] is True and "mount_commands" not in encrypted
    assert encrypted["mounts"] == [{"mount_point": str(host.data_a), "device": "/dev/nvme1n1p1",
                                    "fstype": "ext4", "options": "rw,relatime", "major_minor": "259:3"}]
    assert encrypted["create_time"].endswith("Z") and "T" in encrypted["create_time"]
    assert {"volume_id", "size_gib", "volume_type", "encrypted", "kms_key_id", "attachment_device", "device",
            "fstype", "is_root", "tags"} <= encrypted.keys()
    unmounted = records[host.unmounted]
    assert unmounted["mounted"] is False
    assert unmounted["mount_commands"] == [f"mount -o ro,norecovery,nouuid /dev/nvme3n1 /mnt/{host.unmounted}"]
    json.dumps(list(records.values()))  # plain JSON


# --- panscan volumes ---------------------------------------------------------------------


def table_rows(text: str) -> dict[str, str]:
    return {line.split()[0]: line for line in text.splitlines() if line.startswith("vol-")}


def test_volumes_table_shows_device_mounts_fs_size_and_encryption_per_volume(host: Host) -> None:
    out = io.StringIO()
    assert run_volumes("table", out) == 0
    text = out.getvalue()
    assert text.startswith(f"EBS volumes attached to instance {host.instance_id} (us-east-1, {AZ})\n")
    header = next(line for line in text.splitlines() if line.startswith("VOLUME"))
    assert header.split("  ")[0] == "VOLUME"
    assert [c for c in (h.strip() for h in header.split("  ")) if c] == list(COLUMNS)

    rows = table_rows(text)
    assert rows[host.root_volume].split() == [host.root_volume, "/dev/nvme0n1", "/", "xfs", "8.0", "GiB", "NO", "-"]
    assert rows[host.encrypted].split()[:2] == [host.encrypted, "/dev/nvme1n1"]
    assert f"  {host.data_a}  ext4  10.0 GiB  yes " in rows[host.encrypted]
    assert rows[host.encrypted].endswith(host.kms_key)
    assert rows[host.plain].split() == [host.plain, "/dev/nvme2n1", str(host.data_b), "xfs", "20.0", "GiB", "NO", "-"]
    assert rows[host.unmounted].split() == [host.unmounted, "/dev/nvme3n1", "not", "mounted", "xfs", "5.0", "GiB",
                                            "NO", "-"]
    assert rows[host.absent].split() == [host.absent, "not", "found", "-", "-", "1.0", "GiB", "NO", "-"]

    # Below the table: how to mount the unmounted one read-only, and the one not found.
    after = text.split("\nNot mounted.", 1)[1]
    assert f"  {host.unmounted}  /dev/nvme3n1 (attached as /dev/sdh), xfs\n" in after
    assert f"    mkdir -p /mnt/{host.unmounted}\n" in after
    assert f"    mount -o ro,norecovery,nouuid /dev/nvme3n1 /mnt/{host.unmounted}\n" in after
    assert after.count("mount -o") == 1
    missing = text.split("no block device on this machine matches", 1)[1]
    assert f"  {host.absent} (attached as /dev/sdi)\n" in missing


def test_volumes_jsonl_is_the_instance_then_one_record_per_volume(host: Host) -> None:
    out = io.StringIO()
    assert run_volumes("jsonl", out) == 0
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert records[0] == {"type": "instance", "instance_id": host.instance_id, "region": "us-east-1",
                          "availability_zone": AZ}
    volumes = {r["volume_id"]: r for r in records[1:]}
    assert all(r["type"] == "volume" for r in records[1:])
    assert volumes[host.encrypted]["kms_key_id"] == host.kms_key
    assert volumes[host.encrypted]["mounts"][0]["mount_point"] == str(host.data_a)
    assert volumes[host.plain]["encrypted"] is False
    assert volumes[host.root_volume]["is_root"] is True
    assert volumes[host.unmounted]["mount_commands"] == [
        f"mount -o ro,norecovery,nouuid /dev/nvme3n1 /mnt/{host.unmounted}"]
    assert volumes[host.absent]["device"] is None and volumes[host.absent]["mount_commands"] == []


def test_card_number_in_a_mount_point_is_masked_in_volumes_output(host: Host) -> None:
    pan = "4111111111111111"
    mount_point = host.root.parent / f"mnt/{pan}"
    make_dir(mount_point)
    with (host.root / "proc/self/mountinfo").open("a") as f:
        f.write(mountinfo_line(6, "259:4", str(mount_point), "/dev/nvme2n1", "xfs"))
    for fmt in ("table", "jsonl"):
        out = io.StringIO()
        run_volumes(fmt, out)
        assert pan not in out.getvalue()
        assert "411111******1111" in out.getvalue()


# --- instance metadata ------------------------------------------------------------------------


def test_instance_identity_uses_a_token_from_a_put_first(imds: FakeIMDS, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_EC2_METADATA_DISABLED", raising=False)
    assert ebs.instance_identity() == ebs.Identity(imds.instance_id, "us-east-1", "us-east-1a")
    seen = imds.seen()
    assert [(r.method, r.path) for r in seen] == [("PUT", TOKEN_PATH), ("GET", IDENTITY_PATH)]
    assert seen[0].headers[TTL_HEADER.lower()].isdigit()
    assert seen[1].headers[TOKEN_HEADER.lower()] in imds.tokens


def test_fake_imds_refuses_the_document_without_a_valid_token(imds: FakeIMDS) -> None:
    url = imds.endpoint.rstrip("/") + IDENTITY_PATH
    for headers in ({}, {TOKEN_HEADER: "not-a-token"}):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5)
        assert refused.value.code == 401
    # And a token PUT without the TTL header is a bad request, as on EC2.
    put = urllib.request.Request(imds.endpoint.rstrip("/") + TOKEN_PATH, method="PUT")
    with pytest.raises(urllib.error.HTTPError) as bad:
        urllib.request.urlopen(put, timeout=5)
    assert bad.value.code == 400


def test_imds_refusing_the_token_is_not_on_ec2(imds: FakeIMDS, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_EC2_METADATA_DISABLED", raising=False)
    imds.refuse_token = 403
    with pytest.raises(NotOnEC2) as refused:
        ebs.instance_identity()
    message = str(refused.value)
    assert "\n" not in message
    assert "HTTP 403" in message and imds.endpoint in message and "not on EC2" in message


def test_unreachable_imds_is_not_on_ec2_within_3_seconds(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import DEAD_ENDPOINT

    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", DEAD_ENDPOINT + "/")
    started = time.monotonic()
    with pytest.raises(NotOnEC2) as refused:
        run_volumes("table", io.StringIO())
    assert time.monotonic() - started < 3
    message = str(refused.value)
    assert message == (f"instance metadata not reachable at {DEAD_ENDPOINT}/ within 2 s: not on EC2, "
                       "or IMDS disabled (token request: connection refused)")


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A loopback port that accepts connections (the kernel's backlog) and never answers:
    what a firewall that drops replies looks like to a client."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/"


def test_imds_that_never_answers_is_not_on_ec2_within_3_seconds(silent_endpoint: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_EC2_METADATA_DISABLED", raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", silent_endpoint)
    started = time.monotonic()
    with pytest.raises(NotOnEC2, match=r"within 2 s: not on EC2, or IMDS disabled \(token request: timed out"):
        ebs.instance_identity()
    assert time.monotonic() - started < 3


def test_imds_disabled_by_environment_is_not_on_ec2_without_a_request(imds: FakeIMDS,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(NotOnEC2, match="AWS_EC2_METADATA_DISABLED"):
        ebs.instance_identity()
    assert imds.seen() == []


# --- this machine: mountinfo, serials, devices ------------------------------------------------


def test_mountinfo_parsing_decodes_octal_escapes_and_skips_optional_fields() -> None:
    data = (b"36 35 98:0 /mnt1 /mnt/my\\040data\\011tab rw,noatime master:1 shared:2 - ext3 /dev/root rw,errors=ro\n"
            b"37 35 259:3 / /back\\134slash\\012nl rw - xfs /dev/nvme1n1p1 rw\n"
            b"38 35 259:4 / /raw\\377name ro,relatime - ext4 /dev/odd\\040source rw\n"
            b"garbage line without separator\n")
    assert ebs.parse_mountinfo(data) == [
        Mount("/mnt/my data\ttab", "/dev/root", "ext3", "rw,noatime", "98:0"),
        Mount("/back\\slash\nnl", "/dev/nvme1n1p1", "xfs", "rw", "259:3"),
        Mount("/raw\udcffname", "/dev/odd source", "ext4", "ro,relatime", "259:4"),
    ]


def test_nvme_serial_names_the_volume_id_and_nothing_else() -> None:
    assert ebs.volume_id_from_serial("vol0123456789abcdef0 \n") == "vol-0123456789abcdef0"
    assert ebs.volume_id_from_serial("vol-0123456789abcdef0") == "vol-0123456789abcdef0"
    assert ebs.volume_id_from_serial("vol12345678") == "vol-12345678"  # old 8-digit ids
    assert ebs.volume_id_from_serial("VOL0123456789ABCDEF0") == "vol-0123456789abcdef0"
    for other in ("AWS1A2B3C4D5E6F7G8H9", "", "vol", "vol0123", "vol0123456789abcdef0x"):
        assert ebs.volume_id_from_serial(other) is None


def test_block_devices_from_sysfs_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PANSCAN_HOST_ROOT", str(tmp_path))
    # Native NVMe multipath: the controller lists its hidden path nvme1c1n1; the disk is nvme1n1.
    make_dir(tmp_path / "sys/class/nvme/nvme1/nvme1c1n1")
    (tmp_path / "sys/class/nvme/nvme1/serial").write_text(serial_of("vol-0aaaaaaaaaaaaaaaa"))
    # A controller without a namespace directory, whose disk is in sys/block.
    make_dir(tmp_path / "sys/class/nvme/nvme2")
    (tmp_path / "sys/class/nvme/nvme2/serial").write_text(serial_of("vol-0bbbbbbbbbbbbbbbb"))
    make_dir(tmp_path / "sys/block/nvme2n1")
    # Xen: /dev/sdf appears as xvdf; the old root name /dev/sda1 as the disk xvda on HVM.
    make_dir(tmp_path / "sys/block/xvdf")
    make_dir(tmp_path / "sys/block/xvda/xvda1")
    found = ebs.block_devices({"vol-0ccc": "/dev/sdf", "vol-0ddd": "/dev/sda1", "vol-0eee": "/dev/sdz",
                               "vol-0aaaaaaaaaaaaaaaa": "/dev/xvdf"})
    assert found == {"vol-0aaaaaaaaaaaaaaaa": "/dev/nvme1n1", "vol-0bbbbbbbbbbbbbbbb": "/dev/nvme2n1",
                     "vol-0ccc": "/dev/xvdf", "vol-0ddd": "/dev/xvda"}


def test_block_devices_on_an_empty_host_root_finds_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PANSCAN_HOST_ROOT", str(tmp_path))
    assert ebs.block_devices({"vol-1": "/dev/sdf"}) == {}
    assert ebs.mounts() == []


def test_mount_commands_name_one_filesystem_per_partition(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PANSCAN_HOST_ROOT", str(tmp_path))
    disk = make_dir(tmp_path / "sys/block/nvme5n1")
    make_dir(tmp_path / "run/udev/data")
    # A copy of a Linux root disk: ext4 data, a BIOS boot partition (no filesystem), xfs, swap.
    for n, fstype in ((1, "ext4"), (2, None), (3, "xfs"), (10, "swap")):
        (make_dir(disk / f"nvme5n1p{n}") / "dev").write_text(f"259:{40 + n}\n")
        if fstype:
            (tmp_path / f"run/udev/data/b259:{40 + n}").write_text(f"E:ID_FS_TYPE={fstype}\n")
    volume = Volume("vol-0fff", 30, "gp3", False, None, 0.0, "/dev/sdj", "/dev/nvme5n1", (), "ext4", False, {})
    assert ebs.mount_commands(volume) == ["mount -o ro,noload /dev/nvme5n1p1 /mnt/vol-0fff-p1",
                                          "mount -o ro,norecovery,nouuid /dev/nvme5n1p3 /mnt/vol-0fff-p3"]
    # One partition: the volume's own directory. Nothing known: plain ro, mount detects it.
    single = make_dir(tmp_path / "sys/block/xvdg/xvdg1")
    assert single.is_dir()
    other = Volume("vol-0ggg", 1, "gp2", False, None, 0.0, "/dev/sdg", "/dev/xvdg", (), None, False, {})
    assert ebs.mount_commands(other) == ["mount -o ro /dev/xvdg1 /mnt/vol-0ggg"]
    mounted = Volume("vol-0hhh", 1, "gp2", False, None, 0.0, "/dev/sdh", "/dev/xvdh",
                     (Mount("/data", "/dev/xvdh", "ext4", "rw"),), "ext4", False, {})
    assert ebs.mount_commands(mounted) == []


# --- scan --volumes ------------------------------------------------------------------------


def test_scan_volumes_finds_the_numbers_on_each_mounted_volume_and_tags_them_with_its_id(
        host: Host, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from panscan.match.luhn import check_digit

    body = "45320151128336"
    unencrypted_pan = body + "0" + check_digit(body + "0")
    (host.data_b / "export.csv").write_text(f"card {unencrypted_pan}\n")

    def panscan(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "panscan", "scan", "--volumes", "--no-state", *args],
                              capture_output=True, text=True, timeout=120, env=dict(os.environ))

    proc = panscan("--format", "jsonl")
    assert proc.returncode == 1, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    findings = {(r["masked"], r["volume_id"]) for r in records if r["type"] == "finding"}
    assert findings == {("411111******1111", host.encrypted),
                        (unencrypted_pan[:6] + "******" + unencrypted_pan[-4:], host.plain)}
    items = {Path(r["location"]).name: r["volume_id"] for r in records
             if r["type"] == "item" and not r["location"].startswith("ebs-volume://")}
    assert items == {"orders.csv": host.encrypted, "notes.txt": host.plain, "export.csv": host.plain}
    # The attached volumes that were not read are items too (see the tests below).
    not_read = {r["volume_id"]: r["reason"] for r in records
                if r["type"] == "item" and r["location"].startswith("ebs-volume://")}
    assert not_read == {host.root_volume: "EXCLUDED", host.unmounted: "VOLUME_NOT_MOUNTED",
                        host.absent: "DEVICE_NOT_FOUND"}
    volumes = {r["volume_id"]: r["encrypted"] for r in records if r["type"] == "volume"}
    assert volumes[host.encrypted] is True and volumes[host.plain] is False
    assert host.root_volume not in volumes  # the root volume only with --include-root

    table = panscan()
    assert table.returncode == 1, table.stderr
    section = table.stdout.split("EBS volumes (", 1)[1].splitlines()
    rows = [line.split()[0] for line in section[2:] if line.startswith("vol-")]
    assert rows[:2] == [host.plain, host.encrypted]  # unencrypted card data first
    assert section[2].split()[1] == "NO"


def test_scan_volumes_off_ec2_is_a_one_line_error_and_exit_3(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import subprocess
    import sys

    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "panscan", "scan", "--volumes", "--no-state"],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert proc.returncode == 3
    assert proc.stderr.count("\n") == 1 and "not on EC2" in proc.stderr
    assert time.monotonic() - started < 3  # the bound, Python start-up included
    volumes = subprocess.run([sys.executable, "-m", "panscan", "volumes"], capture_output=True, text=True,
                             timeout=60, env=dict(os.environ))
    assert volumes.returncode == 3 and "not on EC2" in volumes.stderr


def run_scan_volumes(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "panscan", "scan", "--volumes", "--no-state", *args],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ))


def test_volumes_not_scanned_are_skipped_items_with_a_reason_and_the_mount_command(host: Host) -> None:
    plan = plan_volume_scan(include_root=False)
    assert set(plan.mounted.values()) == {host.encrypted, host.plain}
    skipped = {r.item.volume_id: r for r in plan.not_scanned}
    assert {v: (str(r.status), str(r.reason)) for v, r in skipped.items()} == {
        host.root_volume: ("skipped", "EXCLUDED"),  # left out on purpose: --include-root reads it
        host.unmounted: ("skipped", "VOLUME_NOT_MOUNTED"),
        host.absent: ("skipped", "DEVICE_NOT_FOUND"),
    }
    unmounted = skipped[host.unmounted]
    assert unmounted.item.location == f"ebs-volume://{host.unmounted}"
    assert unmounted.item.size == 5 * 2**30
    # The very commands 'panscan volumes' prints for it.
    out = io.StringIO()
    run_volumes("table", out)
    assert f"    mount -o ro,norecovery,nouuid /dev/nvme3n1 /mnt/{host.unmounted}\n" in out.getvalue()
    assert unmounted.detail is not None and unmounted.detail.startswith("not mounted (/dev/nvme3n1 ")
    assert (f"mkdir -p /mnt/{host.unmounted} && mount -o ro,norecovery,nouuid /dev/nvme3n1 /mnt/{host.unmounted}"
            in unmounted.detail)
    absent = skipped[host.absent]
    assert absent.detail is not None and absent.detail.startswith("device not found: attached (attached as /dev/sdi)")
    # With --include-root the root volume is read (it is mounted at /), so it is no item.
    with_root = plan_volume_scan(include_root=True)
    assert host.root_volume not in {r.item.volume_id for r in with_root.not_scanned}
    assert with_root.mounted["/"] == host.root_volume


def test_scan_volumes_with_no_volume_mounted_reports_each_one_and_exits_2(host: Host) -> None:
    # Only the root filesystem is mounted: three data volumes attached, none readable.
    (host.root / "proc/self/mountinfo").write_text(mountinfo_line(1, "259:1", "/", "/dev/nvme0n1p1", "xfs"))

    proc = run_scan_volumes("--format", "jsonl")
    assert proc.returncode == 2, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    items = {r["location"]: (r["status"], r["reason"], r["volume_id"]) for r in of_type(records, "item")}
    assert items == {
        f"ebs-volume://{host.root_volume}": ("skipped", "EXCLUDED", host.root_volume),
        f"ebs-volume://{host.encrypted}": ("skipped", "VOLUME_NOT_MOUNTED", host.encrypted),
        f"ebs-volume://{host.plain}": ("skipped", "VOLUME_NOT_MOUNTED", host.plain),
        f"ebs-volume://{host.unmounted}": ("skipped", "VOLUME_NOT_MOUNTED", host.unmounted),
        f"ebs-volume://{host.absent}": ("skipped", "DEVICE_NOT_FOUND", host.absent),
    }
    [summary] = of_type(records, "summary")
    assert summary["coverage"]["complete"] is False and summary["coverage"]["left_out_on_purpose"] == 1
    assert summary["exit_status"] == 2

    table = run_scan_volumes()
    assert table.returncode == 2, table.stderr
    assert "coverage:      INCOMPLETE" in table.stdout
    assert "VOLUME_NOT_MOUNTED" in table.stdout and "DEVICE_NOT_FOUND" in table.stdout


def test_the_root_volume_is_the_one_ec2_names_even_where_slash_is_an_overlay(host: Host) -> None:
    # Inside a container "/" is an overlay; the root volume's filesystem is mounted only under
    # the bind mounts the runtime adds (/etc/hosts).
    (host.root / "proc/self/mountinfo").write_text(
        mountinfo_line(1, "0:52", "/", "overlay", "overlay")
        + mountinfo_line(2, "259:1", "/etc/hosts", "/dev/nvme0n1p1", "xfs")
        + mountinfo_line(3, "259:3", str(host.data_a), "/dev/nvme1n1p1", "ext4"))
    _, volumes = ebs.discover()
    assert {v.volume_id for v in volumes if v.is_root} == {host.root_volume}

    plan = plan_volume_scan(include_root=False)
    assert list(plan.mounted) == [str(host.data_a)]  # not /etc/hosts: the root volume stays out
    out = io.StringIO()
    run_volumes("table", out)
    assert f"Root volume: {host.root_volume} (scan --volumes reads it only with --include-root)" in out.getvalue()


def test_the_scan_report_says_not_mounted_and_not_found_as_panscan_volumes_does(host: Host) -> None:
    out = io.StringIO()
    run_volumes("table", out)
    listed = table_rows(out.getvalue())
    assert listed[host.unmounted].split()[1:4] == ["/dev/nvme3n1", "not", "mounted"]
    assert listed[host.absent].split()[1:4] == ["not", "found", "-"]  # DEVICE, then MOUNTS

    scan = run_scan_volumes()
    assert scan.returncode == 1, scan.stderr
    section = scan.stdout.split("EBS volumes (", 1)[1]
    rows = {line.split()[0]: line.split() for line in section.splitlines() if line.startswith("vol-")}
    # VOLUME ENCRYPTED KMS-KEY DEVICE MOUNTED-AT FINDINGS
    assert rows[host.unmounted][3:6] == ["/dev/nvme3n1", "not", "mounted"]
    assert rows[host.absent][3:6] == ["not", "found", "-"]
