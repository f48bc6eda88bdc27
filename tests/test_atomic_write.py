"""Atomic writes: a writer killed at any point leaves the previous file or none, never a torn one.

A subprocess saves about 54 MB (four float32 tensors of 4,000,000 random values) and is
killed with SIGKILL after a random delay. The destination must then hold the previous
complete file or the new complete file, each passing verify() with its own SHA-256, or not
exist. The next successful write removes the temporary files that the killed writers left.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import dcformat
from dcformat.container import ContainerWriter

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and flock are POSIX")

REPO_ROOT = Path(__file__).resolve().parent.parent

# Prints "ready" once its data is built, then saves it to argv[1]; "hold" after the path
# makes it open a writer, add one tensor and wait for a line on stdin before closing.
WRITER = """
import sys
import numpy as np
import dcformat
from dcformat.container import ContainerWriter
from dcformat import encodings

rng = np.random.default_rng(0)
tensors = {f"t{i}": rng.standard_normal(4_000_000, dtype=np.float32) for i in range(4)}
if len(sys.argv) > 2 and sys.argv[2] == "hold":
    writer = ContainerWriter(sys.argv[1])
    writer.add_tensor(encodings.encode_raw("t0", tensors["t0"][:1000]))
    print("ready", flush=True)
    sys.stdin.readline()
    writer.close()
else:
    print("ready", flush=True)
    dcformat.save(tensors, sys.argv[1], dcformat.Config(defaults={"encoding": "raw"}))
print("done", flush=True)
"""


def _start_writer(destination: Path, *extra: str) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(destination), *extra],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert process.stdout.readline().strip() == "ready"
    return process


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _temporaries(folder: Path, name: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(f".{name}.") and p.name.endswith(".tmp"))


def _verified_digest(path: Path) -> str:
    with dcformat.open(path) as reader:
        report = reader.verify()
    assert report.ok, report.problems
    return _sha256(path)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The complete file the writer produces, and how long a full run takes."""
    folder = tmp_path_factory.mktemp("reference")
    started = time.perf_counter()
    process = _start_writer(folder / "model.dcf")
    assert process.stdout.readline().strip() == "done"
    assert process.wait(timeout=120) == 0
    seconds = time.perf_counter() - started
    return _sha256(folder / "model.dcf"), seconds


def test_killed_writer_leaves_old_or_new_file(tmp_path, reference):
    new_digest, seconds = reference
    destination = tmp_path / "model.dcf"
    dcformat.save({"old": np.arange(10, dtype=np.float32)}, destination)
    old_digest = _verified_digest(destination)

    rng = np.random.default_rng(1)
    # Delays from "before the temporary file exists" to "after the rename", plus random ones.
    delays = [0.0, 0.3 * seconds, 0.7 * seconds, float(rng.uniform(0, 1.2 * seconds))]
    for delay in delays:
        process = _start_writer(destination)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)  # reap it, so its PID no longer exists
        if destination.exists():
            assert _verified_digest(destination) in (old_digest, new_digest)

    assert destination.exists(), "a killed writer must not remove the previous file"


def test_next_write_removes_stale_temporaries(tmp_path, reference):
    _, seconds = reference
    destination = tmp_path / "model.dcf"
    for delay in (0.4 * seconds, 0.6 * seconds):
        process = _start_writer(destination)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    # Stand-ins in case both kills came before the first byte: a dead PID's file, another
    # destination's file and a name without a PID.
    dead_pid = _dead_pid()
    (tmp_path / f".model.dcf.{dead_pid}.abcd1234.tmp").write_bytes(b"partial")
    (tmp_path / f".other.dcf.{dead_pid}.abcd1234.tmp").write_bytes(b"partial")
    (tmp_path / ".model.dcf.abcd1234.tmp").write_bytes(b"partial")
    assert _temporaries(tmp_path, "model.dcf")

    dcformat.save({"new": np.ones(5, dtype=np.float32)}, destination)

    assert _temporaries(tmp_path, "model.dcf") == [".model.dcf.abcd1234.tmp"]
    assert _temporaries(tmp_path, "other.dcf") == [f".other.dcf.{dead_pid}.abcd1234.tmp"]
    assert dcformat.load(destination)["new"].tolist() == [1.0] * 5


def test_live_writer_temporary_kept(tmp_path):
    destination = tmp_path / "model.dcf"
    process = _start_writer(destination, "hold")
    try:
        live = _temporaries(tmp_path, "model.dcf")
        assert len(live) == 1
        assert f".{process.pid}." in live[0]

        dcformat.save({"other": np.zeros(3, dtype=np.float32)}, destination)
        assert _temporaries(tmp_path, "model.dcf") == live
    finally:
        process.stdin.write("\n")
        process.stdin.flush()
        assert process.stdout.readline().strip() == "done"
        process.wait(timeout=60)

    # The held writer closed last, so the destination now contains its one tensor.
    assert dcformat.load(destination)["t0"].shape == (1000,)
    assert _temporaries(tmp_path, "model.dcf") == []


def test_failed_rename_removes_temporary(tmp_path):
    destination = tmp_path / "model.dcf"
    destination.mkdir()  # os.replace cannot put a file over a folder
    writer = ContainerWriter(destination)
    with pytest.raises(OSError):
        writer.close()
    assert _temporaries(tmp_path, "model.dcf") == []


def test_temporary_name_carries_pid(tmp_path):
    writer = ContainerWriter(tmp_path / "x.dcf")
    try:
        (name,) = _temporaries(tmp_path, "x.dcf")
        assert name.startswith(f".x.dcf.{os.getpid()}.")
    finally:
        writer.abort()
    assert _temporaries(tmp_path, "x.dcf") == []


def _dead_pid() -> int:
    """Return the PID of a process that has exited and been reaped."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid
