"""`kill -9` a real `unlearn bench` mid-run; the same command again ends with the same numbers."""

import os
import signal
import subprocess
import sys
import time

from unlearn_core.records import load_record


def _bench(tiny_folder, corpora, out):
    forget, retain = corpora
    return [sys.executable, "-m", "unlearn_core.cli", "bench", "--method", "selective,random",
            "--model", str(tiny_folder), "--forget", forget, "--retain", retain, "--steps", "8",
            "--fraction", "0.05", "--tokens", "2048", "--eval-tokens", "2048", "--window", "64",
            "--out", str(out), "--quiet"]


def _metrics(out):
    records = sorted((load_record(p) for p in out.glob("*.json")), key=lambda r: r.method)
    return [(r.method, [(s.forget, s.retain, s.pruned) for s in r.steps], r.pruned_neurons)
            for r in records]


def test_kill_9_then_resume_gives_the_uninterrupted_numbers(tiny_folder, text_corpora, tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    subprocess.run(_bench(tiny_folder, text_corpora, full), check=True, capture_output=True)
    child = subprocess.Popen(_bench(tiny_folder, text_corpora, cut), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    killed_at = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        files = list(cut.glob("selective-*.json"))
        if files:
            steps = len(load_record(files[0]).steps)
            if steps >= 3:  # at least two pruning steps written, more to come
                os.kill(child.pid, signal.SIGKILL)
                killed_at = steps
                break
        time.sleep(0.01)
    child.wait()
    assert killed_at is not None, "the run finished before it could be killed; make it longer"
    partial = load_record(next(cut.glob("selective-*.json")))
    assert not partial.complete and len(partial.steps) < 9
    assert not list(cut.glob("random-*.json"))  # random had not started
    out = subprocess.run(_bench(tiny_folder, text_corpora, cut)[:-1], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "selective: resuming after step" in out.stderr
    assert _metrics(cut) == _metrics(full)
