"""Architecture adapters: which `config.model_type`s a family covers and how to build its sites.

Built-in families register through the core plugin exactly as a third-party adapter would
(`register_architectures`); `resolve_site` finds the site of a loaded model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from torch import nn

from .errors import UsageError, did_you_mean
from .sites import NeuronSite, attention_sites, mlp_site


@dataclass(frozen=True)
class Architecture:
    """Which `config.model_type`s an adapter handles and how to build each of their sites."""

    name: str
    model_types: tuple[str, ...]
    sites: Mapping[str, Callable[[nn.Module], NeuronSite]]


# Gemma 3 loaded as a multimodal model keeps its text layers one level down.
_DECODER = ("model.layers", "model.language_model.layers", "language_model.model.layers")
_GATED = {
    "mlp": mlp_site(_DECODER, inputs=("mlp.gate_proj", "mlp.up_proj"), output="mlp.down_proj"),
    **attention_sites(_DECODER, "self_attn.v_proj", "self_attn.o_proj"),
}

# BERT and RoBERTa as masked LMs (BertForMaskedLM.bert, RobertaForMaskedLM.roberta).
_ENCODER = ("bert.encoder.layer", "roberta.encoder.layer")

BUILTIN_ARCHITECTURES: tuple[Architecture, ...] = (
    Architecture("llama", ("llama", "mistral", "qwen2", "qwen3"), _GATED),
    Architecture("gemma", ("gemma", "gemma2", "gemma3", "gemma3_text"), _GATED),
    Architecture("opt", ("opt",), {
        "mlp": mlp_site(("model.decoder.layers",), ("fc1",), "fc2"),
        **attention_sites(("model.decoder.layers",), "self_attn.v_proj", "self_attn.out_proj"),
    }),
    Architecture("gpt2", ("gpt2",), {
        "mlp": mlp_site(("transformer.h",), ("mlp.c_fc",), "mlp.c_proj"),
        **attention_sites(("transformer.h",), "attn.c_attn", "attn.c_proj", fused="gpt2"),
    }),
    Architecture("gpt_neox", ("gpt_neox",), {
        "mlp": mlp_site(("gpt_neox.layers",), ("mlp.dense_h_to_4h",), "mlp.dense_4h_to_h"),
        **attention_sites(("gpt_neox.layers",), "attention.query_key_value", "attention.dense",
                          fused="neox"),
    }),
    Architecture("bert", ("bert", "roberta"), {
        "mlp": mlp_site(_ENCODER, ("intermediate.dense",), "output.dense"),
        **attention_sites(_ENCODER, "attention.self.value", "attention.output.dense"),
    }),
)


def resolve_site(model: nn.Module, site: str, architectures: Mapping[str, Architecture]) -> NeuronSite:
    """The named site of `model`, or a UsageError listing what is supported."""
    model_type = getattr(model.config, "model_type", type(model).__name__)
    by_type = {t: a for a in architectures.values() for t in a.model_types}
    arch = by_type.get(model_type)
    if arch is None:
        raise UsageError(
            f"unsupported architecture '{model_type}'; supported: {', '.join(sorted(by_type))}"
        )
    if site not in arch.sites:
        raise UsageError(
            f"architecture '{arch.name}' has no neuron site '{site}'; it has: {', '.join(arch.sites)}"
        )
    return arch.sites[site](model)


def check_site_name(site: str, architectures: Mapping[str, Architecture]) -> None:
    """A UsageError naming the valid sites unless some architecture has `site` (whether the
    model's own architecture has it is checked when its config is read: resolve_site)."""
    known = sorted({s for a in architectures.values() for s in a.sites})
    if site not in known:
        raise UsageError(f"unknown neuron site '{site}'{did_you_mean(site, known)}; choose from: "
                         f"{', '.join(known)}")
