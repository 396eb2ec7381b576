"""Selective pruning (Pochinkov & Schoots 2024, arXiv 2403.01267).

Score every neuron by how much more important it is to the forget corpus than to the retain
corpus, from statistics collected on the current (already pruned) weights at every step:

    score = I(forget) / (I(retain) + eps),   I in {freq, abs, rms, std}  (default abs)

    unlearn bench --method selective --importance rms
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from unlearn_core import MethodSpec, PruneContext, hookimpl


class SelectiveOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    importance: Literal["freq", "abs", "rms", "std"] = "abs"
    eps: float = Field(1e-6, gt=0, description="added to the retain importance")


class SelectiveScorer:
    def __init__(self, options: SelectiveOptions):
        self.options = options

    def score(self, ctx: PruneContext) -> Tensor:
        forget = ctx.statistics("forget").importance(self.options.importance)
        retain = ctx.statistics("retain").importance(self.options.importance)
        return forget / (retain + self.options.eps)


@hookimpl
def register_methods(register):
    register(MethodSpec(
        name="selective",
        description="activation-ratio importance I(forget)/I(retain), recomputed every step",
        scorer=SelectiveScorer,
        options=SelectiveOptions,
    ))
