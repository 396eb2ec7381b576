"""Neuron sites: where a model's neurons live, how to hook their activations, how to delete them.

A site is a named set of neurons in every layer (e.g. 'mlp': feed-forward middle neurons).
Shapes: L = layers of a site, N = neurons per layer, B = batch, T = tokens per window.
A neuron is addressed as (layer, index); scores and masks are [L, N] tensors.

- 'mlp' (`MLPSite`): every family's feed-forward middle neurons, the input of the MLP's output
  projection. Deleting neuron i zeroes row i of every input projection (gate and up for gated
  MLPs), entry i of their biases, and column i of the output projection.
- 'attn-pre-out' (`MLPSite` with no inputs): the attention's per-head output before its output
  projection (n_heads x d_head a layer; neuron i is dimension i % d_head of head i // d_head). A
  head's output mixes the values of many tokens, so it has no input rows of its own: deleting
  neuron i zeroes column i of the output projection only, as the paper and taker define it.
- 'attn-value' (`ValueSite`): the value projection's outputs (n_kv_heads x d_head a layer).
  Deleting neuron j (dimension d of kv head g) zeroes its value row and bias entry and the
  output-projection column d of every query head that reads kv head g (under grouped-query
  attention, n_heads / n_kv_heads of them), the paper's definition. GPT-2 and GPT-NeoX fuse q, k and
  v into one projection; `fused` says where the values sit in it.
- 'attn-head' (`HeadSite`): whole heads, n_heads a layer. A head's activation at a token is the
  root mean square of its d_head pre-out values (its output vector's length / sqrt(d_head)), so
  its rms statistic is made from its neurons' (the root of their mean squares) and abs is the
  head's mean output size. Deleting a head zeroes its d_head output-projection columns.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from transformers.pytorch_utils import Conv1D

from .errors import UsageError

# Called with a site's activations [B, T, N] (or [B*T, N], as OPT's MLP flattens tokens);
# returning a tensor of the same shape replaces them.
ActivationHook = Callable[[Tensor], "Tensor | None"]


class NeuronSite(ABC):
    """A named set of neurons in every layer (e.g. 'mlp': feed-forward middle neurons).

    A site knows where its activations live and how to delete a neuron from the weights; every
    site (mlp, attn-pre-out, attn-value, attn-head, a plugin's own) implements the same members.
    """

    name: str
    n_layers: int
    n_neurons: int
    # True: a deleted neuron outputs zero (its input weights are zeroed too). False where deleting
    # cuts only the neuron's outgoing weights (attn-pre-out, attn-head): hooks still see its
    # activation, and nothing downstream does. Pruners skip deleted neurons either way (PruneContext.pruned).
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


def _zero_out_features(module: nn.Module, idx: Tensor) -> None:
    """Zero output features `idx` of a projection: rows of nn.Linear's [out, in] weight (columns
    of GPT-2's transposed Conv1D) and their bias entries."""
    if isinstance(module, Conv1D):
        module.weight[:, idx] = 0
    else:
        module.weight[idx, :] = 0
    if getattr(module, "bias", None) is not None:
        module.bias[idx] = 0


def _zero_in_features(module: nn.Module, idx: Tensor) -> None:
    """Zero input features `idx` of a projection: what it reads from them (its bias stays)."""
    if isinstance(module, Conv1D):
        module.weight[idx, :] = 0
    else:
        module.weight[:, idx] = 0


def _width(module: nn.Module, as_input: bool) -> int:
    # nn.Linear stores weight [out, in]; GPT-2's Conv1D stores it [in, out].
    w = module.weight
    transposed = isinstance(module, Conv1D)
    if as_input:
        return w.shape[0] if transposed else w.shape[1]
    return w.shape[1] if transposed else w.shape[0]


def _parameters(layers_path: str, modules: list[dict[str, nn.Module]]) -> dict[str, nn.Parameter]:
    """Weights and biases of `modules` ({name relative to the layer: module} per layer), by full name."""
    params: dict[str, nn.Parameter] = {}
    for i, named in enumerate(modules):
        for name, module in named.items():
            for kind in ("weight", "bias"):
                p = getattr(module, kind, None)
                if p is not None:
                    params[f"{layers_path}.{i}.{name}.{kind}"] = p
    return params


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
        self.n_neurons = _width(self._outputs[0], as_input=True)

    def register_hook(self, layer: int, fn: ActivationHook) -> torch.utils.hooks.RemovableHandle:
        def pre_hook(module: nn.Module, args: tuple) -> tuple | None:
            replaced = fn(args[0])
            return None if replaced is None else (replaced, *args[1:])

        return self._outputs[layer].register_forward_pre_hook(pre_hook)

    @torch.no_grad()
    def delete(self, layer: int, neurons: Tensor) -> None:
        neurons = neurons.to(torch.long)
        for module in self._inputs[layer]:  # neuron i is output feature i of an input projection
            _zero_out_features(module, neurons)
        _zero_in_features(self._outputs[layer], neurons)

    def parameters(self) -> dict[str, nn.Parameter]:
        inputs, output = self._names
        return _parameters(self.layers_path, [
            {**dict(zip(inputs, ins, strict=True)), output: out}
            for ins, out in zip(self._inputs, self._outputs, strict=True)])


@dataclass(frozen=True)
class Heads:
    """The attention's shape: n_heads query heads reading n_kv_heads value heads (grouped-query
    attention when fewer; query head h reads kv head h // (n_heads // n_kv_heads)), d_head each."""

    n_heads: int
    n_kv_heads: int
    head_dim: int

    @classmethod
    def of(cls, config) -> Heads:
        config = config.get_text_config() if hasattr(config, "get_text_config") else config
        n_heads = config.num_attention_heads  # GPT-2's n_head through its attribute_map
        n_kv = getattr(config, "num_key_value_heads", None) or n_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads
        return cls(n_heads, n_kv, head_dim)

    def check(self, o_proj: nn.Module, what: str) -> None:
        if _width(o_proj, as_input=True) != self.n_heads * self.head_dim:
            raise UsageError(f"{what}: the attention output projection reads {_width(o_proj, True)} "
                             f"features, not n_heads x head_dim = {self.n_heads} x {self.head_dim}")


# Where the values sit in a fused q/k/v projection's output features:
#   None:   a projection of their own (v_proj): feature j is value neuron j;
#   "gpt2": [q | k | v], each n_heads x d_head wide (GPT-2's Conv1D c_attn);
#   "neox": per head [q_h | k_h | v_h] (GPT-NeoX's query_key_value, viewed as [..., H, 3 x d_head]).
Fused = Literal[None, "gpt2", "neox"]


class ValueSite(NeuronSite):
    """'attn-value': the value projection's output features, n_kv_heads x d_head a layer."""

    name = "attn-value"

    def __init__(self, model: nn.Module, layers: tuple[str, ...], value: str, output: str,
                 fused: Fused = None):
        self.layers_path, layer_list = _find_layers(model, layers)
        self.heads = h = Heads.of(model.config)
        self._values = [_get(layer, value) for layer in layer_list]
        self._outputs = [_get(layer, output) for layer in layer_list]
        self._names = (value, output)
        h.check(self._outputs[0], "attn-value")
        self.n_layers = len(layer_list)
        self.n_neurons = h.n_kv_heads * h.head_dim
        j = torch.arange(self.n_neurons)
        d = h.head_dim
        # feature of the value module holding value neuron j
        self._features = {None: j, "gpt2": 2 * h.n_heads * d + j,
                          "neox": (j // d) * 3 * d + 2 * d + j % d}[fused]
        self._fused = fused
        width = _width(self._values[0], as_input=False)
        if width != {None: self.n_neurons, "gpt2": 3 * self.n_neurons, "neox": 3 * self.n_neurons}[fused]:
            raise UsageError(f"attn-value: '{value}' writes {width} features, which does not fit "
                             f"{h.n_kv_heads} kv heads x {d} dims" + (f" fused as {fused}" if fused else ""))

    def register_hook(self, layer: int, fn: ActivationHook) -> torch.utils.hooks.RemovableHandle:
        def hook(module: nn.Module, args: tuple, out: Tensor) -> Tensor | None:
            if self._fused is None:
                return fn(out)
            features = self._features.to(out.device)
            replaced = fn(out.index_select(-1, features))
            if replaced is None:
                return None
            out = out.clone()
            out[..., features] = replaced.to(out.dtype)
            return out

        return self._values[layer].register_forward_hook(hook)

    def output_columns(self, neurons: Tensor) -> Tensor:
        """The output-projection columns that value neurons `neurons` feed: dimension d of kv head
        g reaches column h x d_head + d of every query head h of g's group."""
        h = self.heads
        group = h.n_heads // h.n_kv_heads
        kv, d = neurons // h.head_dim, neurons % h.head_dim
        query = kv[:, None] * group + torch.arange(group)  # [k, group]
        return (query * h.head_dim + d[:, None]).flatten()

    @torch.no_grad()
    def delete(self, layer: int, neurons: Tensor) -> None:
        neurons = neurons.to(torch.long).cpu()
        _zero_out_features(self._values[layer], self._features[neurons])
        _zero_in_features(self._outputs[layer], self.output_columns(neurons))

    def parameters(self) -> dict[str, nn.Parameter]:
        value, output = self._names
        return _parameters(self.layers_path, [{value: v, output: o}
                                              for v, o in zip(self._values, self._outputs, strict=True)])


class HeadSite(NeuronSite):
    """'attn-head': whole heads, n_heads a layer; a head's activation at a token is the root mean
    square of its d_head pre-out values."""

    name = "attn-head"
    silent_after_delete = False  # like attn-pre-out: only the output columns are cut

    def __init__(self, model: nn.Module, layers: tuple[str, ...], output: str):
        self.layers_path, layer_list = _find_layers(model, layers)
        self.heads = Heads.of(model.config)
        self._outputs = [_get(layer, output) for layer in layer_list]
        self._name = output
        self.heads.check(self._outputs[0], "attn-head")
        self.n_layers = len(layer_list)
        self.n_neurons = self.heads.n_heads

    def register_hook(self, layer: int, fn: ActivationHook) -> torch.utils.hooks.RemovableHandle:
        h = self.heads

        def pre_hook(module: nn.Module, args: tuple) -> tuple | None:
            x = args[0]
            per_head = x.unflatten(-1, (h.n_heads, h.head_dim))  # [..., H, d_head]
            size = per_head.float().square().mean(-1).sqrt()  # [..., H]
            replaced = fn(size.to(x.dtype))
            if replaced is None:
                return None
            # A head's values are scaled to the size it was given; size 0 (deleted) zeroes it.
            scale = torch.where(size > 0, replaced.float() / size.clamp_min(1e-30), 0.0)
            return ((per_head * scale[..., None].to(x.dtype)).flatten(-2), *args[1:])

        return self._outputs[layer].register_forward_pre_hook(pre_hook)

    @torch.no_grad()
    def delete(self, layer: int, neurons: Tensor) -> None:
        d = self.heads.head_dim
        columns = (neurons.to(torch.long).cpu()[:, None] * d + torch.arange(d)).flatten()
        _zero_in_features(self._outputs[layer], columns)

    def parameters(self) -> dict[str, nn.Parameter]:
        return _parameters(self.layers_path, [{self._name: o} for o in self._outputs])


def mlp_site(layers: tuple[str, ...], inputs: tuple[str, ...], output: str):
    """A site factory for `Architecture.sites`."""
    return lambda model: MLPSite(model, layers, inputs, output)


def attention_sites(layers: tuple[str, ...], value: str, output: str, fused: Fused = None):
    """Factories of the three attention sites of a family, for `Architecture.sites`: `value` is the
    value projection (or the fused q/k/v one, laid out as `fused` says), `output` the attention's
    output projection, both relative to a layer."""
    return {
        "attn-pre-out": lambda model: MLPSite(model, layers, (), output, name="attn-pre-out"),
        "attn-value": lambda model: ValueSite(model, layers, value, output, fused),
        "attn-head": lambda model: HeadSite(model, layers, output),
    }


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
