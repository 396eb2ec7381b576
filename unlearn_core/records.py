"""Run records: one JSON file per method and run, written atomically after every step."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from .evaluate import TokenMetrics
from .metrics import Summary

SCHEMA_VERSION = 1


class StepRecord(BaseModel):
    step: int  # 0 = before pruning
    pruned: int  # neurons deleted so far
    pruned_fraction: float
    forget: TokenMetrics
    retain: TokenMetrics
    seconds: float  # scoring + pruning + evaluation of this step
    # Other evaluation harnesses by name, e.g. {"cloze": {"accuracy": 0.61, ...}}
    evaluations: dict[str, dict[str, Any]] = Field(default_factory=dict)


class RunRecord(BaseModel):
    schema_version: int = SCHEMA_VERSION
    method: str
    plugin: dict[str, str]  # name, package, version of the plugin that registered the method
    options: dict[str, Any]  # the method's validated options
    method_info: dict[str, Any] = Field(default_factory=dict)  # what the method reports (scorer.info())
    config: dict[str, Any]  # the full bench configuration
    model: dict[str, Any]
    site: dict[str, Any]
    forget: dict[str, Any]
    retain: dict[str, Any]
    seed: int
    steps: list[StepRecord] = Field(default_factory=list)
    pruned_neurons: list[list[int]] = Field(default_factory=list)  # per layer, after the last step
    summary: Summary | None = None
    # Published figures to show beside ours, in points, e.g.
    # {"selectivity": 60.2, "source": "Pochinkov & Schoots 2024, Table 2"}
    reference: dict[str, float | str] | None = None
    complete: bool = False
    versions: dict[str, str] = Field(default_factory=dict)
    environment: dict[str, Any] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)
    started: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat())


def write_atomic(path: Path, content: str | bytes) -> None:
    """Write `content` to `path` so that a reader sees the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    data = content.encode("utf-8") if isinstance(content, str) else content
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_record(record: RunRecord, path: Path) -> None:
    write_atomic(Path(path), record.model_dump_json(indent=2) + "\n")


def load_record(path: Path) -> RunRecord:
    return RunRecord.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("unlearn", "torch", "transformers", "datasets", "pluggy", "pydantic", "gguf"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


def environment() -> dict[str, Any]:
    import torch

    return {"platform": platform.platform(), "machine": platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "git": git_hash()}


def git_hash() -> str | None:
    """The commit of the unlearn checkout, when it runs from one."""
    try:
        root = Path(__file__).resolve().parent.parent
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None
