"""The validated bench configuration and its presets."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .errors import UsageError, unknown_name
from .models import DEFAULT_MODEL

MAX_SEED = 2**63 - 1

# Schedule and sizes; any of them can be overridden one by one.
PRESETS: dict[str, dict[str, Any]] = {
    # Finishes `unlearn bench --method selective,random` in under 10 minutes on 2 CPU cores.
    "cpu": {"steps": 5, "fraction": 0.025, "tokens": 8192, "eval_tokens": 8192, "window": 256},
    # Pochinkov & Schoots 2024: 100k tokens per corpus, 50 steps of 2 %.
    "paper": {"steps": 50, "fraction": 0.02, "tokens": 100_000, "eval_tokens": 100_000,
              "window": 256},
    # Seconds, for smoke tests and trying a new plugin.
    "smoke": {"steps": 2, "fraction": 0.05, "tokens": 512, "eval_tokens": 512, "window": 128},
}


class BenchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    methods: list[str] = Field(default_factory=list)  # run_bench needs one; `unlearn explain` none
    model: str = DEFAULT_MODEL
    forget: str = "python"
    retain: str = "shakespeare"
    site: str = "mlp"
    preset: str = "cpu"
    steps: int | None = None
    fraction: float | None = None  # of the site's neurons, deleted per step
    count: int | None = None  # neurons deleted per step; overrides fraction
    tokens: int | None = None  # statistics tokens per corpus
    eval_tokens: int | None = None  # held-out evaluation tokens per corpus
    window: int | None = None  # tokens per window
    batch_size: int = 8
    seed: int = Field(0, ge=0, le=MAX_SEED)  # torch.manual_seed takes at most 64 bits
    device: str = "cpu"
    evals: list[str] = Field(default_factory=lambda: ["tokens"])  # 'tokens' + registered harnesses
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)  # method or harness -> raw options
    # method -> published figures to show beside ours, e.g. {"selectivity": 60.2, "source": "..."}
    references: dict[str, dict[str, float | str]] = Field(default_factory=dict)

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str) -> str:
        if v not in PRESETS:
            raise unknown_name("preset", v, PRESETS)
        return v

    @field_validator("device")
    @classmethod
    def _device_syntax(cls, v: str) -> str:
        """A device torch can name and compute on ('cpu', 'cuda', 'cuda:1', 'mps'); whether this
        machine has it is checked when a bench starts (check_device), not when a record is read."""
        import torch

        try:
            device = torch.device(v)
        except (RuntimeError, TypeError, ValueError):
            raise ValueError(f"'{v}' is not a torch device (e.g. cpu, cuda, cuda:1, mps)") from None
        if device.type == "meta":
            raise ValueError("'meta' holds no weights; choose a device that computes (cpu, cuda, ...)")
        return v

    @model_validator(mode="after")
    def _fill_and_check(self) -> BenchConfig:
        for key, value in PRESETS[self.preset].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if not 0 < self.fraction <= 1:
            raise UsageError(f"--fraction must be in (0, 1], got {self.fraction}")
        if self.steps < 1:
            raise UsageError(f"--steps must be at least 1, got {self.steps}")
        # With --count the preset's fraction is unused: `schedule` checks count x steps instead.
        if self.count is None and self.steps * self.fraction > 1 + 1e-9:
            raise UsageError(f"--steps x --fraction prunes {self.steps * self.fraction:.0%} of the "
                             "neurons; it must be at most 100%")
        for name in ("tokens", "eval_tokens", "window", "batch_size"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.window < 2:
            raise UsageError("--window must be at least 2 tokens")
        if self.count is not None and self.count < 1:
            raise UsageError(f"--count must be at least 1, got {self.count}")
        if len(set(self.methods)) != len(self.methods):
            raise UsageError(f"a method is named twice in --method {','.join(self.methods)}")
        return self

    def schedule(self, total: int) -> list[int]:
        """Neurons deleted after steps 1..steps, cumulative, for a site of `total` neurons.

        Step k reaches round(k x fraction x total) (or k x count): the pruned share stays as close
        to k x fraction as whole neurons allow, and 50 steps of 2 % end at exactly 100 %, never
        beyond. A schedule that cannot run on `total` neurons is a UsageError.
        """
        if self.count is not None:
            if self.count * self.steps > total:
                raise UsageError(f"--steps {self.steps} x --count {self.count} is {self.count * self.steps} "
                                 f"neurons, more than the site's {total}")
            return [k * self.count for k in range(1, self.steps + 1)]
        cumulative = [min(total, round(k * self.fraction * total)) for k in range(1, self.steps + 1)]
        if self.steps * self.fraction >= 1 - 1e-9:
            cumulative[-1] = total  # the last step takes what is left
        starts = [0, *cumulative[:-1]]
        empty = [k for k, (a, b) in enumerate(zip(starts, cumulative, strict=True), 1) if b <= a]
        if empty:
            raise UsageError(f"--fraction {self.fraction:g} of the site's {total} neurons deletes no "
                             f"neuron at step {empty[0]}; raise --fraction or give --count")
        return cumulative
