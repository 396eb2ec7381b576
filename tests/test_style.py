"""The code base stays ruff-clean (rules in pyproject.toml)."""

import os
import subprocess
import sys
from pathlib import Path


def test_ruff_clean():
    root = Path(__file__).resolve().parent.parent
    ruff = Path(sys.executable).parent / "ruff"
    out = subprocess.run([str(ruff) if ruff.exists() else "ruff", "check", "--output-format",
                          "concise", str(root)], capture_output=True, text=True,
                         env={**os.environ, "NO_COLOR": "1"})
    assert out.returncode == 0, out.stdout + out.stderr
