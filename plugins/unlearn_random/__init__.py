"""Baselines that need no neuron explanations: `random` deletes uniformly random neurons.

Random uses the bench's schedule like every method, so its curve shows how much of any
method's forget drop comes from deleting neurons at all.
"""

from __future__ import annotations

import torch
from torch import Tensor

from unlearn_core import MethodSpec, PruneContext, hookimpl


class RandomScorer:
    def __init__(self, options):
        pass

    def score(self, ctx: PruneContext) -> Tensor:
        return torch.rand(ctx.site.shape, generator=ctx.generator(), dtype=torch.float64)


@hookimpl
def register_methods(register):
    register(MethodSpec(
        name="random",
        description="uniformly random neurons, seeded per step",
        scorer=RandomScorer,
    ))
