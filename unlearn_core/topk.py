"""The default pruner: the globally highest-scoring neurons across all layers at once."""

from __future__ import annotations

import torch
from torch import Tensor

from .interfaces import PruneContext
from .sites import delete_mask


class GlobalTopK:
    """Delete the `count` highest-scoring neurons not yet deleted, whatever their layer.

    Ties are broken by position (layer, then index) so the same scores give the same choice.
    """

    def prune(self, ctx: PruneContext, scores: Tensor, count: int) -> Tensor:
        if scores.shape != ctx.pruned.shape:
            raise ValueError(f"scores have shape {tuple(scores.shape)}, the site has "
                             f"{tuple(ctx.pruned.shape)}")
        flat = scores.detach().double().flatten().clone()
        if not torch.isfinite(flat[~ctx.pruned.flatten()]).all():
            raise ValueError("scores must be finite")
        flat[ctx.pruned.flatten()] = -torch.inf
        available = int((~ctx.pruned).sum())
        order = torch.sort(flat, descending=True, stable=True).indices[:min(count, available)]
        chosen = torch.zeros_like(ctx.pruned).flatten()
        chosen[order] = True
        chosen = chosen.view_as(ctx.pruned)
        delete_mask(ctx.site, chosen)
        return ctx.pruned | chosen
