"""Contrastive Wanda: weight magnitude x activation, on the forget data minus the retain data.

Wanda (Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language Models")
scores a weight by |W| x ||X||: how big it is times how strongly its input fires. For a neuron, the
weights it writes with are its column of the output projection, so its Wanda score on a corpus is

    wanda(i) = ||W_out[:, i]||_2 x I(i),     I = rms (default) or mean |z| of its activation z

To unlearn we want neurons that matter for the forget corpus and not for the retain corpus:

    score(i) = ||W_out[:, i]||_2 x (I_forget(i) - retain_weight x I_retain(i))

Unlike selective pruning's ratio I_forget / I_retain, the difference keeps the weight norm in
the score: a neuron that fires for code but barely writes to the residual stream ranks low.
Statistics are recomputed on the pruned model at every step.

    pip install ./docs/examples/unlearn-magnitude
    unlearn bench --method magnitude,selective,random -O magnitude.retain_weight=0.5
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn
from unlearn_core import MethodSpec, NeuronSite, PruneContext, hookimpl

__version__ = "0.1.0"


class MagnitudeOptions(BaseModel):
    """Validated before any model loads: `-O magnitude.importance=abs` or a typo fails at once."""

    model_config = ConfigDict(extra="forbid")

    importance: Literal["rms", "abs"] = "rms"
    retain_weight: float = Field(1.0, ge=0, description="how much retain importance is subtracted")


class MagnitudeScorer:
    """Scores neurons with contrastive Wanda; the bench calls `score` once per pruning step."""

    def __init__(self, options: MagnitudeOptions):
        self.options = options
        self.details: dict[str, Any] = {}

    def score(self, ctx: PruneContext) -> Tensor:  # float64 [layers, neurons]
        forget = ctx.statistics("forget").importance(self.options.importance)
        retain = ctx.statistics("retain").importance(self.options.importance)
        norms = output_norms(ctx.model, ctx.site, ctx.forget_windows[:1, :8])
        self.details["weights"] = "output-projection column norms" if norms is not None else \
            "not found for this site: activation only"
        weight = norms if norms is not None else torch.ones_like(forget)
        return weight * (forget - self.options.retain_weight * retain)

    def info(self) -> dict[str, Any]:
        """Recorded in the run record as `method_info`."""
        return self.details


@torch.no_grad()
def output_norms(model: nn.Module, site: NeuronSite, ids: Tensor) -> Tensor | None:
    """||W_out[:, i]||_2 for every neuron, float64 [layers, neurons], or None if not found.

    A site hands its activations to the module that consumes them, so that module is the one whose
    input is the very tensor the site's hook sees. This needs nothing but the plugin interfaces.
    """
    inputs: list[tuple[nn.Module, Tensor]] = []
    seen: dict[int, Tensor] = {}

    def remember(module: nn.Module, args: tuple) -> None:
        if args and isinstance(args[0], Tensor) and hasattr(module, "weight"):
            inputs.append((module, args[0]))

    def keep(layer: int):
        def hook(acts: Tensor) -> None:
            seen.setdefault(layer, acts)
        return hook

    handles = [site.register_hook(layer, keep(layer)) for layer in range(site.n_layers)]
    handles.append(nn.modules.module.register_module_forward_pre_hook(remember))
    try:
        model(ids.to(next(model.parameters()).device))
    finally:
        for h in handles:
            h.remove()
    norms = []
    for layer in range(site.n_layers):
        module = next((m for m, x in inputs if x is seen.get(layer)), None)
        if module is None:
            return None
        w = module.weight.detach().double()
        # nn.Linear stores [out, in]; GPT-2's Conv1D stores [in, out].
        column_norms = w.norm(dim=0) if isinstance(module, nn.Linear) else w.norm(dim=1)
        if column_norms.shape != (site.n_neurons,):
            return None
        norms.append(column_norms.cpu())
    return torch.stack(norms)


@hookimpl
def register_methods(register) -> None:
    """The one hook this plugin implements; `unlearn` calls it once when it loads plugins."""
    register(MethodSpec(
        name="magnitude",
        description="contrastive Wanda: ||W_out column|| x (I(forget) - I(retain))",
        scorer=MagnitudeScorer,
        options=MagnitudeOptions,
    ))
