"""The example plugin, pip-installed into a fresh virtual environment, runs beside the built-ins.

This is the whole third-party story with no change to this repository: `pip install` unlearn and
the plugin package (from local folders, no network), then the environment's own `unlearn`
console script lists the plugin, benches it against `random`, and the leaderboard names its
package and version. The fresh environment reuses this one's installed libraries (torch, ...)
through a .pth file, so nothing is downloaded and nothing heavy is rebuilt.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "unlearn-magnitude"
PACKAGE = {"name": "magnitude", "package": "unlearn-magnitude", "version": "0.1.0"}


def _copy_sources(dest: Path) -> tuple[Path, Path]:
    """Copies of unlearn and of the example, so that building them leaves no files in the repo."""
    core = dest / "unlearn"
    for part in ("unlearn_core", "plugins"):
        shutil.copytree(ROOT / part, core / part, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / part, core / part)
    example = dest / "unlearn-magnitude"
    shutil.copytree(EXAMPLE, example, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    return core, example


def _fresh_venv(path: Path) -> Path:
    """A new environment that also sees this one's libraries (its own site-packages come first)."""
    venv.create(path, with_pip=False, system_site_packages=True)
    python = path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    outer = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    lines = "".join(f"import site; site.addsitedir({p!r})\n" for p in outer)
    (Path(purelib) / "_outer_env.pth").write_text(lines)
    return python


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("UNLEARN_PLUGINS", "PYTHONPATH")}
    env.update(OMP_NUM_THREADS="1", PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", CI="1")
    env.update(kw.pop("env", {}))
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, **kw)
    assert out.returncode == 0, f"{' '.join(cmd)}\n{out.stdout}\n{out.stderr}"
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, Path]:
    """A fresh environment with unlearn and unlearn-magnitude: its python, its `unlearn` console script
    and the (copied) example folder."""
    tmp = tmp_path_factory.mktemp("example-plugin")
    core, example = _copy_sources(tmp / "src")
    python = _fresh_venv(tmp / "venv")
    _run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
          str(core), str(example)])
    script = python.parent / "unlearn"
    assert script.exists()
    return {"python": python, "unlearn": script, "example": example}


@pytest.fixture
def installed(env) -> Path:
    return env["unlearn"]


def test_installed_plugin_is_listed_with_its_package_and_version(installed):
    data = json.loads(_run([str(installed), "plugins", "--json"]).stdout)
    assert data["failed"] == []
    mine = next(p for p in data["plugins"] if p["name"] == "magnitude")
    assert {k: mine[k] for k in PACKAGE} == PACKAGE
    assert mine["hooks"] == ["register_methods"] and mine["registered"] == {"methods": ["magnitude"]}
    builtin = next(p for p in data["plugins"] if p["name"] == "selective")
    assert builtin["package"] == "unlearn"

    chosen = json.loads(_run([str(installed), "plugins", "--json"],
                             env={"UNLEARN_PLUGINS": "magnitude"}).stdout)
    assert [p["name"] for p in chosen["plugins"]] == ["unlearn_core", "magnitude"]


def test_installed_plugin_benches_beside_random_and_reaches_the_leaderboard(installed, tiny_folder,
                                                                            text_corpora, tmp_path):
    forget, retain = text_corpora
    out = tmp_path / "results"
    bench = _run([str(installed), "bench", "--method", "magnitude,random", "--model", str(tiny_folder),
                  "--forget", forget, "--retain", retain, "--preset", "smoke", "--out", str(out), "--quiet"])
    assert "magnitude" in bench.stdout and "random" in bench.stdout
    records = {json.loads(p.read_text())["method"]: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert set(records) == {"magnitude", "random"}
    assert records["magnitude"]["plugin"] == PACKAGE
    assert records["random"]["plugin"]["package"] == "unlearn"
    assert records["magnitude"]["complete"] and len(records["magnitude"]["steps"]) == 3
    assert records["magnitude"]["method_info"]["weights"] == "output-projection column norms"

    board = _run([str(installed), "leaderboard", str(out)]).stdout
    row = next(line for line in board.splitlines() if "magnitude" in line)
    assert "unlearn-magnitude 0.1.0" in row



def test_the_example_passes_its_own_tests_where_it_is_installed(env):
    """Its tests use the conformance kit on the registered (entry-point) method, as an author's would."""
    out = _run([str(env["python"]), "-m", "pytest", "-q", "-p", "no:cacheprovider", str(env["example"])],
               cwd=env["example"])
    assert " passed" in out.stdout and "failed" not in out.stdout
