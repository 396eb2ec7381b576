"""Neuron sites: where a model's neurons live, how to hook their activations, how to delete them.

A site is a named set of neurons in every layer (e.g. 'mlp': feed-forward middle neurons).
Shapes: L = layers of a site, N = neurons per layer, B = batch, T = tokens per window.
A neuron is addressed as (layer, index); scores and masks are [L, N] tensors.

`MLPSite` covers every supported family's feed-forward middle neurons, i.e. the input of the MLP's
output projection. Deleting neuron i zeroes row i of every input projection (gate and up for gated
MLPs), entry i of their biases, and column i of the output projection.

The same class gives 'attn-pre-out': the attention's per-head output before its output projection
(n_heads x d_head neurons a layer; neuron i is dimension i % d_head of head i // d_head). It has no
input projections of its own (a head's output mixes the values of many tokens), so deleting neuron
i zeroes column i of the output projection only, as the paper and taker define it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from transformers.pytorch_utils import Conv1D

from .errors import UsageError

# Called with a site's activations [B, T, N] (or [B*T, N], as OPT's MLP flattens tokens);
# returning a tensor of the same shape replaces them.
ActivationHook = Callable[[Tensor], "Tensor | None"]


class NeuronSite(ABC):
    """A named set of neurons in every layer (e.g. 'mlp': feed-forward middle neurons).

    A site knows where its activations live and how to delete a neuron from the weights.
    New sites (attention 'value', 'pre-out') implement the same four members.
    """

    name: str
    n_layers: int
    n_neurons: int
    # True: a deleted neuron outputs zero (its input weights are zeroed too). False where deleting
    # cuts only the neuron's outgoing weights (attn-pre-out): hooks still see its activation, and
    # nothing downstream does. Pruners skip deleted neurons either way (PruneContext.pruned).
    silent_after_delete: bool = True

    @abstractmethod
    def register_hook(self, layer: int, fn: ActivationHook) -> torch.utils.hooks.RemovableHandle:
        """Call `fn` with this layer's activations [..., N] on every forward."""

    @abstractmethod
    def delete(self, layer: int, neurons: Tensor) -> None:
        """Make `neurons` (int [k]) of `layer` inert by zeroing the weights that carry them."""

    @abstractmethod
    def parameters(self) -> dict[str, nn.Parameter]:
        """Every parameter `delete` may write to, by name: what a snapshot must keep."""

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_layers, self.n_neurons)

    @contextmanager
    def hooks(self, make_hook: Callable[[int], ActivationHook]) -> Iterator[None]:
        """`make_hook(layer)` on every layer for the duration of a `with` block."""
        handles = [self.register_hook(layer, make_hook(layer)) for layer in range(self.n_layers)]
        try:
            yield
        finally:
            for h in handles:
                h.remove()


def _get(root: nn.Module, dotted: str) -> nn.Module:
    for part in dotted.split("."):
        root = getattr(root, part)
    return root


def _find_layers(model: nn.Module, candidates: tuple[str, ...]) -> tuple[str, nn.ModuleList]:
    for path in candidates:
        try:
            layers = _get(model, path)
        except AttributeError:
            continue
        if isinstance(layers, nn.ModuleList):
            return path, layers
    raise UsageError(f"cannot find the decoder layers of {type(model).__name__} (tried {candidates})")


class MLPSite(NeuronSite):
    """The input features of `output` in every layer of `layers`, written by the projections in
    `inputs`: feed-forward middle neurons ('mlp'), or with no inputs the attention's pre-out."""

    def __init__(self, model: nn.Module, layers: tuple[str, ...], inputs: tuple[str, ...],
                 output: str, name: str = "mlp"):
        self.name = name
        self.silent_after_delete = bool(inputs)
        self.layers_path, layer_list = _find_layers(model, layers)
        self._inputs = [[_get(layer, p) for p in inputs] for layer in layer_list]
        self._outputs = [_get(layer, output) for layer in layer_list]
        self._names = (inputs, output)
        self.n_layers = len(layer_list)
        self.n_neurons = self._width(self._outputs[0], as_input=True)

    @staticmethod
    def _width(module: nn.Module, as_input: bool) -> int:
        # nn.Linear stores weight [out, in]; GPT-2's Conv1D stores it [in, out].
        w = module.weight
        transposed = isinstance(module, Conv1D)
        if as_input:
            return w.shape[0] if transposed else w.shape[1]
        return w.shape[1] if transposed else w.shape[0]

    def register_hook(self, layer: int, fn: ActivationHook) -> torch.utils.hooks.RemovableHandle:
        def pre_hook(module: nn.Module, args: tuple) -> tuple | None:
            replaced = fn(args[0])
            return None if replaced is None else (replaced, *args[1:])

        return self._outputs[layer].register_forward_pre_hook(pre_hook)

    @torch.no_grad()
    def delete(self, layer: int, neurons: Tensor) -> None:
        neurons = neurons.to(torch.long)
        for module in self._inputs[layer]:
            # Neuron i is output feature i of an input projection.
            if isinstance(module, Conv1D):
                module.weight[:, neurons] = 0
            else:
                module.weight[neurons, :] = 0
            if getattr(module, "bias", None) is not None:
                module.bias[neurons] = 0
        out = self._outputs[layer]
        if isinstance(out, Conv1D):
            out.weight[neurons, :] = 0
        else:
            out.weight[:, neurons] = 0

    def parameters(self) -> dict[str, nn.Parameter]:
        params: dict[str, nn.Parameter] = {}
        inputs, output = self._names
        for i, (ins, out) in enumerate(zip(self._inputs, self._outputs, strict=True)):
            for name, module in [*zip(inputs, ins, strict=True), (output, out)]:
                for kind in ("weight", "bias"):
                    p = getattr(module, kind, None)
                    if p is not None:
                        params[f"{self.layers_path}.{i}.{name}.{kind}"] = p
        return params


def mlp_site(layers: tuple[str, ...], inputs: tuple[str, ...], output: str):
    """A site factory for `Architecture.sites`."""
    return lambda model: MLPSite(model, layers, inputs, output)


def attn_pre_out_site(layers: tuple[str, ...], output: str):
    """A factory for the 'attn-pre-out' site: the input of the attention's output projection."""
    return lambda model: MLPSite(model, layers, (), output, name="attn-pre-out")


def snapshot(site: NeuronSite) -> dict[str, Tensor]:
    """Copies of every parameter a deletion can touch, so weights can be restored without reloading."""
    return {name: p.detach().clone() for name, p in site.parameters().items()}


@torch.no_grad()
def restore(site: NeuronSite, saved: dict[str, Tensor]) -> None:
    for name, p in site.parameters().items():
        p.copy_(saved[name])


def delete_mask(site: NeuronSite, mask: Tensor) -> None:
    """Delete every neuron where the bool [L, N] `mask` is true."""
    for layer in range(site.n_layers):
        idx = mask[layer].nonzero().flatten()
        if idx.numel():
            site.delete(layer, idx)
