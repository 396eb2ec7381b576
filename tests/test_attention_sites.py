"""The 'attn-pre-out' site is the attention's per-head output before its output projection, in
every family: n_heads x d_head neurons a layer (GQA included), and silencing all of them leaves the
attention block nothing but the projection's bias. (Hook-versus-delete equivalence, restore and
the rest are the architecture kit's, run for every site in test_kit.py.)"""

import pytest
import torch

from unlearn_core import load_plugins, resolve_site
from unlearn_core.testing import TINY_CONFIGS, tiny_model

REGISTRY = load_plugins()
# Where each family's attention block and its output projection live, relative to a layer.
ATTENTION = {"llama": ("self_attn", "o_proj"), "mistral": ("self_attn", "o_proj"),
             "qwen2": ("self_attn", "o_proj"), "gemma": ("self_attn", "o_proj"),
             "gemma2": ("self_attn", "o_proj"), "gemma3_text": ("self_attn", "o_proj"),
             "opt": ("self_attn", "out_proj"), "gpt2": ("attn", "c_proj"),
             "gpt_neox": ("attention", "dense")}


def _layers(model):
    for path in ("model.layers", "model.decoder.layers", "transformer.h", "gpt_neox.layers"):
        obj = model
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
            return obj
        except AttributeError:
            continue
    raise AssertionError("no layers")


def _heads(config) -> tuple[int, int]:
    heads = getattr(config, "num_attention_heads", None) or config.n_head
    hidden = getattr(config, "hidden_size", None) or config.n_embd
    return heads, getattr(config, "head_dim", None) or hidden // heads


@pytest.mark.parametrize("config", [c for c in TINY_CONFIGS if c.split("-")[0] in ATTENTION])
@torch.no_grad()
def test_pre_out_is_the_attention_output_before_its_projection(config):
    model = tiny_model(config)
    site = resolve_site(model, "attn-pre-out", REGISTRY.architectures)
    heads, head_dim = _heads(model.config)
    assert site.n_neurons == heads * head_dim and site.n_layers == model.config.num_hidden_layers

    block_name, proj_name = ATTENTION[model.config.model_type]
    outputs = []
    for layer in _layers(model):
        block = getattr(layer, block_name)
        block.register_forward_hook(
            lambda m, args, out: outputs.append(out[0] if isinstance(out, tuple) else out))
    ids = torch.arange(12).reshape(1, 12) % model.config.vocab_size
    model(ids)
    assert all(o.abs().max() > 0 for o in outputs)  # attention is on: its output is not trivially zero
    outputs.clear()
    with site.hooks(lambda layer: lambda a: torch.zeros_like(a)):
        model(ids)
    for layer, out in zip(_layers(model), outputs, strict=True):
        bias = getattr(getattr(getattr(layer, block_name), proj_name), "bias", None)
        expected = torch.zeros_like(out) if bias is None else bias.expand_as(out)
        assert torch.allclose(out, expected, atol=1e-6), "silencing pre-out left attention output"
