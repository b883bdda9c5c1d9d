"""Running one fuzz target: coverage-guided under atheris (libFuzzer) when it is installed,
else a plain-Python driver that mutates the seed inputs with a seeded ``random.Random`` for a
fixed time. Both take the same libFuzzer-style command line, so ``benchmarks/fuzz.py`` runs a
target the same way whichever is present::

    python fuzz/fuzz_matcher.py -max_total_time=60 -artifact_prefix=/tmp/panscan-fuzz/matcher- [CORPUS_DIR...]
    python fuzz/fuzz_matcher.py CRASH_FILE          # replay one input (raw bytes, or a .hex file)

Flags understood by the plain driver (atheris passes every flag on to libFuzzer): ``-max_total_time``
(seconds, default 60), ``-seed`` (default 1), ``-timeout`` (seconds per input, default 30),
``-runs`` (inputs, default unlimited), ``-artifact_prefix`` (default ``/tmp/panscan-fuzz/<target>-``).
The target's seeds are always written to ``<target>-seeds`` beside the artifacts and added after
the corpus directories given (default ``<target>-corpus`` there; libFuzzer adds what it finds to
the first one, so a later run starts from what an earlier one learnt).

A failing input (an exception, or more than ``-timeout`` seconds) is written raw to
``<artifact_prefix>crash-<sha1>`` (libFuzzer: ``crash-``/``timeout-``/``oom-``) and as hex to the
same name plus ``.hex``; the run exits non-zero. Fuzz inputs are random data: they may hold
digits that pass Luhn, never real card numbers.
"""

from __future__ import annotations

import binascii
import contextlib
import hashlib
import os
import random
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType, ModuleType

OneInput = Callable[[bytes], None]

ARTIFACT_ROOT = Path("/tmp/panscan-fuzz")  # noqa: S108 (where the brief wants crash files; nothing secret)
DEFAULT_SECONDS = 60
# Byte strings the mutator splices in: what the matcher and the extractors branch on.
TOKENS: tuple[bytes, ...] = (
    b"0", b"4111111111111111", b"4111 1111 1111 1111", b"4111-1111-1111-1111", b"378282246310005",
    b"6011000990139424", b"5555555555554444", b" ", b"-", b"\n", b"\x00", b"a", b"T", b"%B", b"^", b"=",
    b";", b"?", b"card ", b"cvv", b"\xff\xfe", b"\xfe\xff", b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06",
    b"\x1f\x8b\x08", b"BZh9", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd", b"ustar\x00", b"%PDF-1.4", b"stream\n",
    b"endstream", b"{\\rtf1", b"\\b ", b"From ", b"Content-Transfer-Encoding: base64\r\n",
    b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", b"<w:t>", b"</w:t>", b"\xff" * 4, b"\x00" * 4, b"\x7f\xff\xff\xff",
)


def _atheris() -> ModuleType | None:
    """atheris, unless it is missing or ``PANSCAN_FUZZ_ENGINE=plain`` asks for the plain driver."""
    if os.environ.get("PANSCAN_FUZZ_ENGINE", "auto") == "plain":
        return None
    try:
        import atheris
    except ImportError:
        return None
    return atheris


@contextlib.contextmanager
def instrumented(fuzzing: bool) -> Iterator[None]:
    """Import panscan inside this block: when ``fuzzing`` (the target runs as a script) under
    atheris, its modules are instrumented for coverage as they are imported (panscan's own
    code only: instrumenting numpy and the rest would take a minute and guide nothing)."""
    atheris = _atheris() if fuzzing else None
    if atheris is None:
        yield
        return
    with atheris.instrument_imports(include=["panscan"]):
        yield


class Hang(BaseException):
    """An input ran past ``-timeout`` (a BaseException: code under test that catches
    ``Exception`` must not swallow it)."""


def hex_dump(data: bytes) -> str:
    text = binascii.hexlify(data).decode()
    return "\n".join(text[i:i + 128] for i in range(0, len(text), 128)) + "\n"


def read_input(path: Path) -> bytes:
    """A saved input: raw bytes, or the hex of :func:`hex_dump` for a ``.hex`` file."""
    data = path.read_bytes()
    if path.suffix == ".hex":
        return binascii.unhexlify(b"".join(data.split()))
    return data


def save_failure(data: bytes, prefix: str, kind: str = "crash") -> tuple[Path, Path]:
    """``data`` written raw and as hex under ``prefix``; returns both paths."""
    raw = Path(f"{prefix}{kind}-{hashlib.sha1(data).hexdigest()}")  # noqa: S324 (a name, not a secret)
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_bytes(data)
    hexed = raw.with_name(raw.name + ".hex")
    hexed.write_text(hex_dump(data))
    return raw, hexed


def mutate(data: bytes, rng: random.Random, pool: Sequence[bytes], max_len: int) -> bytes:
    """``data`` with one to four random edits: bit flips, interesting bytes, inserted tokens
    or random bytes, deletions, duplicated or repeated slices, a splice with another input."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(9)
        n = len(out)
        pos = rng.randint(0, n)
        if op == 0 and n:
            i = rng.randrange(n)
            out[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            out[rng.randrange(n)] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, 0x20, 0x2D, 0x0A, 0x30 + rng.randrange(10)))
        elif op == 2:
            out[pos:pos] = rng.choice(TOKENS)
        elif op == 3:
            out[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif op == 4 and n:
            end = min(n, pos + rng.randint(1, 64))
            del out[pos:end]
        elif op == 5 and n:
            start = rng.randrange(n)
            piece = out[start:start + rng.randint(1, 256)]
            out[pos:pos] = piece * rng.choice((1, 2, 8, 64))
        elif op == 6 and pool:
            other = rng.choice(pool)
            cut = rng.randint(0, len(other))
            out = out[:pos] + bytearray(other[cut:])
        elif op == 7 and n:
            del out[rng.randint(0, n):]  # truncation: the commonest real-world corruption
        else:
            digit_run = "".join(rng.choice("0123456789") for _ in range(rng.randint(12, 20)))
            out[pos:pos] = digit_run.encode()
    return bytes(out[:max_len])


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise Hang


def fuzz_plain(name: str, one_input: OneInput, seeds: Sequence[bytes], *, seconds: float, seed: int,
               timeout: float, runs: int | None, prefix: str, max_len: int) -> int:
    """Random mutations of ``seeds`` through ``one_input`` for ``seconds``; 0, or 1 with the
    failing input saved (see the module docstring)."""
    rng = random.Random(seed)  # noqa: S311 (reproducible test inputs, not secrets)
    pool: list[bytes] = list(seeds) or [b""]
    previous = signal.signal(signal.SIGALRM, _alarm)
    started = time.monotonic()
    last_report = started
    done = 0
    try:
        while time.monotonic() - started < seconds and (runs is None or done < runs):
            base = pool[done] if done < len(seeds) else rng.choice(pool)
            data = base if done < len(seeds) else mutate(base, rng, pool, max_len)
            signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                one_input(data)
            except Hang:
                return _failed(name, data, prefix, "timeout", f"the input ran longer than {timeout:g} s")
            except BaseException as exc:
                if isinstance(exc, KeyboardInterrupt):
                    raise
                return _failed(name, data, prefix, "crash", "".join(traceback.format_exception(exc)))
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            done += 1
            if len(pool) < 4096 and rng.random() < 0.05:
                pool.append(data)  # no coverage feedback: keep a sample of mutants to mutate further
            now = time.monotonic()
            if now - last_report >= 10:
                print(f"#{done} {name}: {done / (now - started):.0f} exec/s, pool {len(pool)}", flush=True)
                last_report = now
    finally:
        signal.signal(signal.SIGALRM, previous)
    elapsed = time.monotonic() - started
    print(f"{name}: {done} inputs in {elapsed:.0f} s (plain driver, seed {seed}), no failure", flush=True)
    return 0


def _failed(name: str, data: bytes, prefix: str, kind: str, why: str) -> int:
    raw, hexed = save_failure(data, prefix, kind)
    print(f"==== {name}: {kind} on a {len(data)}-byte input\n{why}", file=sys.stderr)
    print(f"input saved: {raw} (raw), {hexed} (hex); replay: python {sys.argv[0]} {hexed}", file=sys.stderr)
    return 1


def _flags(argv: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    flags: dict[str, str] = {}
    paths: list[str] = []
    for arg in argv:
        if arg.startswith("-") and "=" in arg:
            key, _, value = arg[1:].partition("=")
            flags[key] = value
        else:
            paths.append(arg)
    return flags, paths


def main(name: str, one_input: OneInput, seeds: Callable[[], list[bytes]], *, max_len: int = 1 << 20,
         argv: Sequence[str] | None = None) -> int:
    """Run target ``name`` as the command line asks (see the module docstring)."""
    args = list(sys.argv[1:] if argv is None else argv)
    flags, paths = _flags(args)
    if paths and all(Path(p).is_file() for p in paths):
        for p in paths:  # replay: a saved input, raw or hex
            one_input(read_input(Path(p)))
            print(f"{p}: no failure")
        return 0
    prefix = flags.get("artifact_prefix", str(ARTIFACT_ROOT / f"{name}-"))
    home = Path(prefix).parent
    home.mkdir(parents=True, exist_ok=True)  # libFuzzer does not create it
    if not paths:
        paths = [str(home / f"{name}-corpus")]
        args.append(paths[0])
    seed_dir = home / f"{name}-seeds"
    for d in (*paths, seed_dir):
        Path(d).mkdir(parents=True, exist_ok=True)
    for data in seeds():
        (seed_dir / hashlib.sha1(data).hexdigest()).write_bytes(data)  # noqa: S324
    paths.append(str(seed_dir))
    args.append(str(seed_dir))
    atheris = _atheris()
    if atheris is not None:
        if "artifact_prefix" not in flags:
            args.insert(0, f"-artifact_prefix={prefix}")
        if "max_len" not in flags:
            args.insert(0, f"-max_len={max_len}")
        atheris.Setup([sys.argv[0], *args], one_input)
        atheris.Fuzz()  # exits the process: libFuzzer decides the status
    corpus = [read_input(f) for p in paths for f in sorted(Path(p).iterdir()) if f.is_file()]
    return fuzz_plain(name, one_input, corpus, seconds=float(flags.get("max_total_time", DEFAULT_SECONDS)),
                      seed=int(flags.get("seed", 1)), timeout=float(flags.get("timeout", 30)),
                      runs=int(flags["runs"]) if "runs" in flags else None, prefix=prefix, max_len=max_len)
