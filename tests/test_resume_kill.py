"""`kill -9` a real `unlearn bench` mid-run; the same command again ends with the same numbers.

Table-driven over every registered method: a method that computes something once on the unpruned
model (explanations, a candidate set, keyword ranks) must compute it on the unpruned weights when
it resumes, not on the pruned ones the record re-applies.
"""

import os
import signal
import subprocess
import sys
import time

import pytest

from unlearn_core import load_plugins
from unlearn_core.cli import main
from unlearn_core.records import load_record

# Options that make each method's once-computed work depend on the weights it sees.
METHOD_OPTIONS = {
    "selective": {},
    "random": {},
    "snip": {"max_neurons": 40, "concepts": '["def return x"]'},
    "keyword": {"max_neurons": 40, "keywords": '["def", "return"]'},
    "llm-scored": {"max_neurons": 40, "concepts": '["def return x"]'},
}


def _bench(method, tiny_folder, corpora, out):
    forget, retain = corpora
    options = dict(METHOD_OPTIONS[method])
    if options:  # each run keeps its own explanation store: nothing is shared between runs
        options["store"] = str(out / "explanations.sqlite")
    argv = ["bench", "--method", method, "--model", str(tiny_folder), "--forget", forget, "--retain",
            retain, "--steps", "8", "--fraction", "0.05", "--tokens", "2048", "--eval-tokens", "2048",
            "--window", "64", "--out", str(out)]
    for key, value in options.items():
        argv += ["-O", f"{method}.{key}={value}"]
    return [*argv, "--quiet"]


def _metrics(out):
    records = sorted((load_record(p) for p in out.glob("*.json")), key=lambda r: r.method)
    return [(r.method, [(s.forget, s.retain, s.pruned) for s in r.steps], r.pruned_neurons)
            for r in records]


def test_every_registered_method_is_in_the_table():
    assert set(METHOD_OPTIONS) == set(load_plugins().methods)


@pytest.mark.parametrize("method", sorted(METHOD_OPTIONS))
def test_kill_9_then_resume_gives_the_uninterrupted_numbers(method, tiny_folder, text_corpora, tmp_path,
                                                            capsys):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(_bench(method, tiny_folder, text_corpora, full)) == 0
    child = subprocess.Popen([sys.executable, "-m", "unlearn_core.cli",
                              *_bench(method, tiny_folder, text_corpora, cut)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_at = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        files = list(cut.glob(f"{method}-*.json"))
        if files:
            steps = len(load_record(files[0]).steps)
            if steps >= 3:  # at least two pruning steps written, more to come
                os.kill(child.pid, signal.SIGKILL)
                killed_at = steps
                break
        time.sleep(0.005)
    child.wait()
    assert killed_at is not None, "the run finished before it could be killed; make it longer"
    partial = load_record(next(cut.glob(f"{method}-*.json")))
    assert not partial.complete and len(partial.steps) < 9
    capsys.readouterr()
    assert main(_bench(method, tiny_folder, text_corpora, cut)[:-1]) == 0
    assert f"{method} on mlp: resuming after step" in capsys.readouterr().err
    assert _metrics(cut) == _metrics(full)
