"""Run folders under concurrent writers and killed processes.

* Two writers on one folder: the second (a real second process, started while the first holds the
  lock) is refused at once naming the holder; the first's run is intact and resumable.
* A lock holder killed with SIGKILL leaves a stale holder record; the next writer recovers it.
* A small run killed with SIGKILL at random points (fixed seeds), again and again, then finished by
  re-running the same command: metrics identical, string for string, to an uninterrupted run; the same
  after a checkpoint is corrupted on disk (resume detects it by its SHA-256 and falls back).
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tiny import FAST_LQ, set_args

from dedafp.cli import main
from dedafp.common.checksums import read_manifest, sha256_of
from dedafp.common.lock import HOLDER_NAME

FAST = FAST_LQ
ROOT = Path(__file__).resolve().parents[1]


def start(*argv: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "dedafp.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def rows(run: Path) -> list[dict[str, str]]:
    """metrics.csv without the wall-clock columns (time/...), as strings."""
    with open(run / "metrics.csv") as handle:
        return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in csv.DictReader(handle)]


def checksums_hold(run: Path) -> bool:
    manifest = read_manifest(run / "checkpoints")
    found = sorted((run / "checkpoints").glob("iter_*.pt"))
    return bool(found) and all(manifest[p.name] == sha256_of(p) for p in found)


def test_a_second_writer_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "run"
    first = start("train", "lq1d", "--iterations", "16", "--seed", "3", "--out", str(out), *set_args(*FAST))
    wait_for(out / HOLDER_NAME, first)
    holder = json.loads((out / HOLDER_NAME).read_text())
    assert holder["pid"] == first.pid
    others = [start("train", "lq1d", "--iterations", "16", "--seed", "4", "--out", str(out), *set_args(*FAST)),
              start("train", "--resume", str(out), "--iterations", "20")]
    for second in others:
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert f"is being written by pid {first.pid}" in err, err
    assert first.poll() is None                     # refused while the first still runs, not after it
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert [int(r["iteration"]) for r in rows(out)] == list(range(17))
    assert json.loads((out / "summary.json").read_text())["iterations"] == 16
    assert "seed: 3" in (out / "config.yaml").read_text()
    assert checksums_hold(out)
    assert not (out / HOLDER_NAME).exists()          # released
    assert main(["train", "--resume", str(out), "--iterations", "17"]) == 0
    assert [int(r["iteration"]) for r in rows(out)] == list(range(18))


def test_a_killed_holders_stale_lock_is_recovered(tmp_path, capsys):
    out = tmp_path / "run"
    holder = start("train", "lq1d", "--iterations", "30", "--out", str(out), *set_args(*FAST))
    wait_for(out / "checkpoints" / "iter_000.pt", holder)
    holder.send_signal(signal.SIGKILL)
    holder.communicate(timeout=60)
    stale = json.loads((out / HOLDER_NAME).read_text())
    assert stale["pid"] == holder.pid                 # the record outlived its process
    capsys.readouterr()
    done = len(list((out / "checkpoints").glob("iter_*.pt"))) - 1
    assert main(["train", "--resume", str(out), "--iterations", str(done + 1)]) == 0
    printed = capsys.readouterr().out
    assert f"recovered the stale lock of {out} left by pid {holder.pid}" in " ".join(printed.split())
    assert not (out / HOLDER_NAME).exists()
    assert [int(r["iteration"]) for r in rows(out)] == list(range(done + 2))


def test_runs_killed_at_random_points_resume_to_identical_metrics(tmp_path):
    argv = ["train", "lq1d", "--iterations", "3", "--seed", "2", *set_args(*FAST)]
    straight = tmp_path / "straight"
    started = time.perf_counter()
    assert main([*argv, "--out", str(straight)]) == 0
    per_iteration = (time.perf_counter() - started) / 4
    expected = rows(straight)

    killed = tmp_path / "killed"
    generator = random.Random(14)
    kills = 0
    for _ in range(4):                                   # killed at random points ...
        process = start(*argv, "--out", str(killed))    # (the same command continues an unfinished run)
        # Random points measured from the next checkpoint, in units of this machine's iteration time,
        # so that the kills land inside iterations however fast or loaded the machine is.
        done = len(list((killed / "checkpoints").glob("iter_*.pt")))
        next_checkpoint = killed / "checkpoints" / f"iter_{done:03d}.pt"
        while not next_checkpoint.exists() and process.poll() is None:
            time.sleep(0.02)
        try:
            process.wait(timeout=generator.uniform(0.05, 0.8) * per_iteration)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.communicate(timeout=60)
    assert kills >= 2                                   # (a short-lived last start may finish first)
    process = start("train", "--resume", str(killed))   # ... then resumed to the end
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert rows(killed) == expected
    assert checksums_hold(killed)

    # A checkpoint corrupted on disk (same size, flipped bytes): resume detects it and falls back.
    corrupted = tmp_path / "corrupted"
    shutil.copytree(straight, corrupted)
    path = corrupted / "checkpoints" / "iter_003.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 16] = bytes(16)
    path.write_bytes(bytes(data))
    process = start("train", "--resume", str(corrupted), "--iterations", "3")
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert "iter_003.pt cannot be trusted (sha256 mismatch" in " ".join(out.split())
    assert (corrupted / "checkpoints" / "iter_003.pt.corrupt").exists()
    assert rows(corrupted) == expected
    assert checksums_hold(corrupted)
