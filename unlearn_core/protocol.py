"""The one definition of "the same experiment".

Two runs follow the same protocol when their numbers can be compared: the same weights, neuron
site, corpora (what they hold, how they are split and windowed, how many tokens), deletion
schedule, and evaluations with the same options. The method, its options and the seed are what a
protocol compares; batch size and device only decide how fast it runs.

- the leaderboard ranks runs of one protocol against each other (`Protocol.of(record)`);
- plots of one protocol share a file prefix (`Protocol.key`);
- a record is resumed, not redone, when protocol, method, options, seed, device and windows
  match (`run_key`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict

from .records import CorpusInfo, RunRecord


class CorpusProtocol(BaseModel):
    model_config = ConfigDict(frozen=True)

    spec: str
    description: str | None
    split: str | None
    bos: bool
    stats_tokens: int
    eval_tokens: int
    window: int

    @classmethod
    def of(cls, corpus: CorpusInfo) -> CorpusProtocol:
        return cls(**corpus.model_dump(include=set(cls.model_fields)))


class Protocol(BaseModel):
    model_config = ConfigDict(frozen=True)

    model: str  # fingerprint of the weights
    model_spec: str  # as given to --model (shown, and part of the key only through the fingerprint)
    site: str
    layers: int
    neurons_per_layer: int
    forget: CorpusProtocol
    retain: CorpusProtocol
    schedule: tuple[int, ...]  # cumulative neurons deleted after each step
    per_step: str  # '2.5 %' or '100 neurons', as asked
    evaluations: tuple[tuple[str, str], ...]  # (name, options as canonical JSON), sorted

    @classmethod
    def of(cls, record: RunRecord) -> Protocol:
        c, site = record.config, record.site
        schedule = site.schedule or c.schedule(site.neurons)  # records before the schedule was kept
        per_step = f"{c.count:,} neurons" if c.count is not None else f"{100 * c.fraction:g} %"
        return cls(model=record.model.fingerprint, model_spec=record.model.spec, site=site.name,
                   layers=site.layers, neurons_per_layer=site.neurons_per_layer,
                   forget=CorpusProtocol.of(record.forget), retain=CorpusProtocol.of(record.retain),
                   schedule=tuple(schedule), per_step=per_step,
                   evaluations=tuple(sorted((name, canonical(e.options))
                                            for name, e in record.evaluations.items())))

    @property
    def key(self) -> str:
        fields = self.model_dump(mode="json", exclude={"model_spec", "per_step"})
        return hashlib.sha256(canonical(fields).encode()).hexdigest()[:16]

    @property
    def title(self) -> str:
        evals = f" · {', '.join(n for n, _ in self.evaluations)}" if self.evaluations else ""
        f = self.forget
        return (f"{self.model_spec} [{self.model[:8]}] · {self.site} neurons · forget {f.spec} → retain "
                f"{self.retain.spec} · {len(self.schedule)} steps of {self.per_step} · "
                f"{f.stats_tokens:,} statistics + {f.eval_tokens:,} evaluation tokens · "
                f"window {f.window}{evals}")


def run_key(record: RunRecord) -> str:
    """Records with the same key are the same run: one with it is resumed, not redone. The device
    is part of it (CPU and GPU kernels round differently, and a run's steps must agree), and so are
    the windows' token ids: a corpus file edited since is other text, so another run."""
    blob = canonical({"protocol": Protocol.of(record).key, "method": record.method,
                      "options": record.options, "seed": record.seed, "device": record.config.device,
                      "windows": [record.forget.sha256, record.retain.sha256]})
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)
