"""The local file source: real trees, special files, links, permissions, mounts."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from panscan.model import Item, ItemResult, Reason, Status
from panscan.sources.files import SourceError, WalkOptions, changed_since, enumerate_files, open_file

NOBODY = 65534
T = TypeVar("T")


def walk(*targets: str | Path, **options: object) -> list[Item | ItemResult]:
    return list(enumerate_files([str(t) for t in targets], WalkOptions(**options)))  # type: ignore[arg-type]


def by_location(records: list[Item | ItemResult]) -> dict[str, Item | ItemResult]:
    out: dict[str, Item | ItemResult] = {}
    for r in records:
        location = r.location if isinstance(r, Item) else r.item.location
        assert location not in out, f"{location!r} reported twice"
        out[location] = r
    return out


def assert_result(record: Item | ItemResult, status: Status, reason: Reason) -> None:
    assert isinstance(record, ItemResult), record
    assert (record.status, record.reason) == (status, reason), record


def open_reason(item: Item) -> Reason:
    with pytest.raises(SourceError) as info:
        open_file(item).close()
    return info.value.reason


def run_with_timeout(fn: Callable[[], T], seconds: float = 5.0) -> T:
    """Run fn in a thread; fail (instead of hanging the suite) if it does not return."""
    values: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            values.append(fn())
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "call blocked"
    if errors:
        raise errors[0]
    return values[0]


# --- regular files -----------------------------------------------------------------------


def test_regular_files_become_items_with_identity_and_times(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_bytes(b"x" * 10)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.csv").write_bytes(b"")
    records = by_location(walk(tmp_path))
    assert set(records) == {f"{tmp_path}/a.log", f"{tmp_path}/sub/b.csv"}  # directories: no record
    for location, item in records.items():
        st = os.stat(location)
        assert item == Item(location=location, source="file", size=st.st_size, last_modified=st.st_mtime,
                            inode=st.st_ino, device=st.st_dev, mtime_ns=st.st_mtime_ns)
    with open_file(records[f"{tmp_path}/a.log"]) as f:  # type: ignore[arg-type]
        assert f.read() == b"x" * 10
        assert not changed_since(records[f"{tmp_path}/a.log"], f)  # type: ignore[arg-type]


def test_missing_target_is_an_error_not_found(tmp_path: Path) -> None:
    (record,) = walk(tmp_path / "nope")
    assert_result(record, Status.ERROR, Reason.NOT_FOUND)


def test_single_file_target_is_one_item(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"abc")
    (item,) = walk(tmp_path / "f")
    assert isinstance(item, Item) and item.size == 3


# --- special files -------------------------------------------------------------------------


def test_fifo_socket_and_device_are_skipped_as_not_regular_files(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock"))
    try:
        expected = {"fifo", "sock"}
        try:
            os.mknod(tmp_path / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
            expected.add("null")
        except PermissionError:
            pass  # no CAP_MKNOD here: FIFO and socket still checked
        records = by_location(walk(tmp_path))
        assert set(records) == {f"{tmp_path}/{n}" for n in expected}
        for record in records.values():
            assert_result(record, Status.SKIPPED, Reason.NOT_REGULAR_FILE)
        assert "null" not in expected or "character device" in records[f"{tmp_path}/null"].detail  # type: ignore[union-attr,operator]
        # A FIFO named directly on the command line is skipped too, not opened.
        (fifo_record,) = run_with_timeout(lambda: walk(tmp_path / "fifo"))
        assert_result(fifo_record, Status.SKIPPED, Reason.NOT_REGULAR_FILE)
        assert open_reason(Item(location=str(tmp_path / "sock"), source="file")) is Reason.NOT_REGULAR_FILE
    finally:
        sock.close()


def test_open_file_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")  # no writer: a blocking open would wait forever
    reason = run_with_timeout(lambda: open_reason(Item(location=str(tmp_path / "fifo"), source="file")))
    assert reason is Reason.NOT_REGULAR_FILE


def test_open_file_refuses_a_fifo_swapped_in_for_a_listed_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"data")
    (item,) = walk(tmp_path)
    os.unlink(tmp_path / "f")
    os.mkfifo(tmp_path / "f")
    assert run_with_timeout(lambda: open_reason(item)) is Reason.NOT_REGULAR_FILE  # type: ignore[arg-type]


def test_open_file_refuses_a_device_node() -> None:
    assert open_reason(Item(location="/dev/null", source="file")) is Reason.NOT_REGULAR_FILE


def test_open_file_refuses_a_file_replaced_since_it_was_listed(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"old")
    (item,) = walk(tmp_path)
    (tmp_path / "new").write_bytes(b"new")
    os.replace(tmp_path / "new", tmp_path / "f")  # same path, another inode
    assert open_reason(item) is Reason.CHANGED_DURING_SCAN  # type: ignore[arg-type]


def test_open_file_of_a_vanished_file_is_not_found(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    (item,) = walk(tmp_path)
    os.unlink(tmp_path / "f")
    assert open_reason(item) is Reason.NOT_FOUND  # type: ignore[arg-type]


# --- changes while reading -------------------------------------------------------------------


def test_changed_since_detects_a_file_appended_to_during_the_read(tmp_path: Path) -> None:
    path = tmp_path / "growing.log"
    path.write_bytes(b"line\n" * 100_000)
    (item,) = walk(tmp_path)
    with open_file(item) as f:  # type: ignore[arg-type]
        f.read(4096)
        assert not changed_since(item, f)  # type: ignore[arg-type]
        with open(path, "ab") as writer:
            writer.write(b"more\n")
        f.read()
        assert changed_since(item, f)  # type: ignore[arg-type]


def test_changed_since_detects_a_rewrite_that_keeps_the_size(tmp_path: Path) -> None:
    path = tmp_path / "same-size"
    path.write_bytes(b"aaaa")
    (item,) = walk(tmp_path)
    with open_file(item) as f:  # type: ignore[arg-type]
        f.read()
        with open(path, "r+b") as writer:
            writer.write(b"bbbb")
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # coarse clocks: force it
        assert changed_since(item, f)  # type: ignore[arg-type]


# --- symbolic links ----------------------------------------------------------------------------


def test_symlinks_inside_a_tree_are_not_followed_by_default(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "f").write_bytes(b"x")
    (tmp_path / "tree").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "tree" / "to-dir")
    os.symlink(tmp_path / "real" / "f", tmp_path / "tree" / "to-file")
    os.symlink(tmp_path / "missing", tmp_path / "tree" / "dangling")
    records = by_location(walk(tmp_path / "tree"))
    assert set(records) == {f"{tmp_path}/tree/{n}" for n in ("to-dir", "to-file", "dangling")}
    for record in records.values():
        assert_result(record, Status.SKIPPED, Reason.SYMLINK_NOT_FOLLOWED)


def test_command_line_targets_that_are_symlinks_are_followed(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "f").write_bytes(b"content")
    os.symlink(tmp_path / "real", tmp_path / "dir-link")
    os.symlink(tmp_path / "real" / "f", tmp_path / "file-link")
    records = by_location(walk(tmp_path / "dir-link", tmp_path / "file-link"))
    assert set(records) == {f"{tmp_path}/dir-link/f", f"{tmp_path}/file-link"}
    for item in records.values():
        assert isinstance(item, Item)
        with open_file(item) as f:  # reads through the link the walk chose to follow
            assert f.read() == b"content"


def test_open_file_refuses_a_symlink_swapped_in_for_a_listed_file(tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(b"elsewhere")
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "f").write_bytes(b"listed")
    (item,) = walk(tmp_path / "tree")
    os.unlink(tmp_path / "tree" / "f")
    os.symlink(tmp_path / "secret", tmp_path / "tree" / "f")
    assert open_reason(item) is Reason.SYMLINK_NOT_FOLLOWED  # type: ignore[arg-type]


def test_symlink_loops_are_reported_and_the_walk_ends_when_following_links(tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "sub" / "f").write_bytes(b"x")
    os.symlink("..", tmp_path / "d" / "sub" / "up")  # directory cycle
    os.symlink("b", tmp_path / "d" / "a")  # a -> b -> a: ELOOP
    os.symlink("a", tmp_path / "d" / "b")
    os.symlink("sub/f", tmp_path / "d" / "f-link")
    records = by_location(run_with_timeout(lambda: walk(tmp_path / "d", follow_symlinks=True)))
    assert set(records) == {f"{tmp_path}/d/{n}" for n in ("sub/f", "sub/up", "a", "b", "f-link")}
    for name in ("sub/up", "a", "b"):
        assert_result(records[f"{tmp_path}/d/{name}"], Status.SKIPPED, Reason.SYMLINK_LOOP)
    followed = records[f"{tmp_path}/d/f-link"]
    assert isinstance(followed, Item) and followed.inode == os.stat(tmp_path / "d" / "sub" / "f").st_ino


def test_symlink_loop_named_on_the_command_line_is_reported(tmp_path: Path) -> None:
    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    (record,) = walk(tmp_path / "a")
    assert_result(record, Status.SKIPPED, Reason.SYMLINK_LOOP)


def test_dangling_link_followed_is_not_found(tmp_path: Path) -> None:
    os.symlink(tmp_path / "missing", tmp_path / "dangling")
    (tmp_path / "d").mkdir()
    os.symlink(tmp_path / "missing", tmp_path / "d" / "dangling")
    (record,) = walk(tmp_path / "d", follow_symlinks=True)
    assert_result(record, Status.ERROR, Reason.NOT_FOUND)


# --- excludes --------------------------------------------------------------------------------


def test_excluded_paths_are_reported_once_and_not_descended(tmp_path: Path) -> None:
    for rel in ("keep/a.txt", "keep/b.log", "cache/x/y.txt", "logs/old/z.txt", "logs/new.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    records = by_location(walk(tmp_path, excludes=("*.log", "cache", f"{tmp_path}/logs/old")))
    assert set(records) == {f"{tmp_path}/{r}" for r in ("keep/a.txt", "keep/b.log", "cache", "logs/old",
                                                        "logs/new.txt")}
    for rel in ("keep/b.log", "cache", "logs/old"):  # by basename, by basename, by full path
        assert_result(records[f"{tmp_path}/{rel}"], Status.SKIPPED, Reason.EXCLUDED)
    assert isinstance(records[f"{tmp_path}/keep/a.txt"], Item)


def test_star_in_an_exclude_glob_spans_directories(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "c.txt").write_bytes(b"x")
    (tmp_path / "top.txt").write_bytes(b"x")
    records = by_location(walk(tmp_path, excludes=(f"{tmp_path}/a*",)))
    assert set(records) == {f"{tmp_path}/a", f"{tmp_path}/top.txt"}


def test_excluded_command_line_target_is_reported_not_walked(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    (record,) = walk(tmp_path, excludes=(str(tmp_path),))
    assert_result(record, Status.SKIPPED, Reason.EXCLUDED)


# --- names, depth, laziness --------------------------------------------------------------------


def test_names_with_newlines_and_invalid_utf8_are_listed_and_opened(tmp_path: Path) -> None:
    raw_names = [b"line\nbreak.txt", b"caf\xe9-\xff\xfe.txt", b" lead and trail "]
    for n, raw in enumerate(raw_names):
        with open(os.path.join(os.fsencode(tmp_path), raw), "wb") as f:
            f.write(b"content %d" % n)
    records = walk(tmp_path)
    assert len(records) == 3
    got = {}
    for item in records:
        assert isinstance(item, Item) and isinstance(item.location, str)
        with open_file(item) as f:
            got[os.path.basename(os.fsencode(item.location))] = f.read()
    assert got == {raw: b"content %d" % n for n, raw in enumerate(raw_names)}


def make_deep_tree(base: Path, depth: int) -> str:
    """``depth`` nested directories (paths far beyond PATH_MAX) with a file at the bottom;
    built through directory descriptors since no single path can reach it."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            next_fd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = next_fd
        out = os.open("bottom.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(out, b"found at the bottom")
        os.close(out)
    finally:
        os.close(fd)
    return f"{base}{'/d' * depth}/bottom.txt"


def test_ten_thousand_deep_tree_is_walked_and_its_files_opened(tmp_path: Path) -> None:
    # tmpfs when there is one: 10,000 mkdirs and their removal take seconds on a real disk.
    shm = Path("/dev/shm")
    base = Path(tempfile.mkdtemp(dir=shm)) if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path / "deep"
    base.mkdir(exist_ok=True)
    try:
        expected = make_deep_tree(base, 10_000)
        assert len(os.fsencode(expected)) > 4096 * 4
        started = time.monotonic()
        (item,) = walk(base)
        # Linear in depth: re-resolving every directory's full path (quadratic) took ~50 s.
        assert time.monotonic() - started < 10
        assert isinstance(item, Item) and item.location == expected
        with open_file(item) as f:
            assert f.read() == b"found at the bottom"
            assert not changed_since(item, f)
    finally:
        # shutil.rmtree recurses per level; rm -rf does not.
        subprocess.run(["rm", "-rf", "--", str(base)], check=True)


def test_walk_is_lazy_and_lists_a_directory_only_when_it_is_reached(tmp_path: Path) -> None:
    (tmp_path / "first").mkdir()
    (tmp_path / "first" / "f").write_bytes(b"x")
    (tmp_path / "second").mkdir()
    records = enumerate_files([str(tmp_path)], WalkOptions())
    first = next(records)
    # A file created now, in a directory not yet reached, is still found: nothing below the
    # root was listed ahead of the consumer.
    (tmp_path / "second" / "late").write_bytes(b"x")
    rest = list(records)
    locations = {r.location for r in [first, *rest] if isinstance(r, Item)}
    assert locations == {f"{tmp_path}/first/f", f"{tmp_path}/second/late"}


# --- privileges (tests run as root; the checks run as nobody) --------------------------------


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the unprivileged user can reach (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="panscan-perm-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for p in [path, *path.rglob("*")]:
            if p.is_dir() and not p.is_symlink():
                p.chmod(0o755)
        shutil.rmtree(path)


AS_NOBODY = textwrap.dedent("""
    import json, os, sys
    from panscan.sources.files import SourceError, WalkOptions, enumerate_files, open_file
    from panscan.model import Item
    # Everything is imported while still root (the interpreter lives under /root); then drop.
    os.setgroups([])
    os.setgid({uid})
    os.setuid({uid})
    assert os.geteuid() == {uid}
    out = []
    for r in enumerate_files(sys.argv[1:], WalkOptions()):
        if isinstance(r, Item):
            try:
                with open_file(r) as f:
                    out.append([r.location, "read", f.read().decode()])
            except SourceError as e:
                out.append([r.location, "open", str(e.reason)])
        else:
            out.append([r.item.location, str(r.status), str(r.reason)])
    print(json.dumps(out))
""").format(uid=NOBODY)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")
def test_unreadable_directories_and_files_are_permission_denied(shared_dir: Path) -> None:
    (shared_dir / "ok.txt").write_bytes(b"readable")
    (shared_dir / "secret.txt").write_bytes(b"hidden")
    (shared_dir / "secret.txt").chmod(0o000)
    (shared_dir / "locked").mkdir()
    (shared_dir / "locked" / "inside").write_bytes(b"x")
    (shared_dir / "locked").chmod(0o000)
    (shared_dir / "nosearch").mkdir()  # names listable, but nothing can be stat'ed
    (shared_dir / "nosearch" / "entry").write_bytes(b"x")
    (shared_dir / "nosearch").chmod(0o644)

    # As root, everything is readable: the modes, not the walk, make the difference below.
    assert {r.location for r in walk(shared_dir) if isinstance(r, Item)} == {
        f"{shared_dir}/{n}" for n in ("ok.txt", "secret.txt", "locked/inside", "nosearch/entry")}

    proc = subprocess.run([sys.executable, "-c", AS_NOBODY, str(shared_dir)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    got = {loc: (what, detail) for loc, what, detail in json.loads(proc.stdout)}
    assert got == {
        f"{shared_dir}/ok.txt": ("read", "readable"),
        f"{shared_dir}/secret.txt": ("open", "PERMISSION_DENIED"),
        f"{shared_dir}/locked": ("error", "PERMISSION_DENIED"),
        f"{shared_dir}/nosearch/entry": ("error", "PERMISSION_DENIED"),
    }


# --- filesystems -------------------------------------------------------------------------------


IN_MOUNT_NAMESPACE = textwrap.dedent("""
    import json, subprocess, sys
    from panscan.model import Item
    from panscan.sources.files import WalkOptions, enumerate_files
    root, mnt = sys.argv[1], sys.argv[2]
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt]).returncode != 0:
        sys.exit(77)
    open(mnt + "/on-tmpfs.txt", "w").write("x")
    def records(target, **opts):
        return [[r.location, "item"] if isinstance(r, Item) else [r.item.location, str(r.reason)]
                for r in enumerate_files([target], WalkOptions(**opts))]
    print(json.dumps({"one": records(root), "all": records(root, one_filesystem=False),
                      "target": records(mnt)}))
""")


@pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare(1) not installed")
def test_mount_point_of_another_filesystem_is_reported_once_and_not_descended(tmp_path: Path) -> None:
    (tmp_path / "tree" / "mnt").mkdir(parents=True)
    (tmp_path / "tree" / "here.txt").write_bytes(b"x")
    (tmp_path / "tree" / "mnt" / "under-mount.txt").write_bytes(b"hidden by the mount")
    # A private mount namespace: the tmpfs disappears with the process, whatever happens.
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", IN_MOUNT_NAMESPACE,
         str(tmp_path / "tree"), str(tmp_path / "tree" / "mnt")],
        capture_output=True, text=True, timeout=60,
    )
    if proc.returncode != 0 and ("Operation not permitted" in proc.stderr or proc.returncode == 77):
        pytest.skip(f"cannot mount here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    tree = tmp_path / "tree"
    assert sorted(got["one"]) == sorted([[f"{tree}/here.txt", "item"], [f"{tree}/mnt", "CROSSES_FILESYSTEM"]])
    assert sorted(got["all"]) == sorted([[f"{tree}/here.txt", "item"], [f"{tree}/mnt/on-tmpfs.txt", "item"]])
    # A mount point named as the target is walked: the boundary is relative to the target.
    assert got["target"] == [[f"{tree}/mnt/on-tmpfs.txt", "item"]]
