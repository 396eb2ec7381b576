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
             "gpt_neox": ("attention", "dense"),
             # BERT's attention block adds the residual and a LayerNorm: watch the projection itself
             "bert": ("attention.output.dense", ""), "roberta": ("attention.output.dense", "")}


def _get(obj, dotted: str):
    for part in filter(None, dotted.split(".")):
        obj = getattr(obj, part)
    return obj


def _layers(model):
    for path in ("model.layers", "model.decoder.layers", "transformer.h", "gpt_neox.layers",
                 "bert.encoder.layer", "roberta.encoder.layer"):
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
        block = _get(layer, block_name)
        block.register_forward_hook(
            lambda m, args, out: outputs.append(out[0] if isinstance(out, tuple) else out))
    ids = torch.arange(12).reshape(1, 12) % model.config.vocab_size
    model(ids)
    assert all(o.abs().max() > 0 for o in outputs)  # attention is on: its output is not trivially zero
    outputs.clear()
    with site.hooks(lambda layer: lambda a: torch.zeros_like(a)):
        model(ids)
    for layer, out in zip(_layers(model), outputs, strict=True):
        bias = getattr(_get(_get(layer, block_name), proj_name), "bias", None)
        expected = torch.zeros_like(out) if bias is None else bias.expand_as(out)
        assert torch.allclose(out, expected, atol=1e-6), "silencing pre-out left attention output"


def _capture(model, site_name, ids):
    """What the hooks of `site_name` see in one forward of `ids`, per layer."""
    site = resolve_site(model, site_name, REGISTRY.architectures)
    seen = []
    with site.hooks(lambda layer: lambda a: seen.append(a.detach().clone())):
        model(ids)
    return site, seen


@pytest.mark.parametrize("config", [c for c in TINY_CONFIGS if c.split("-")[0] in ATTENTION])
@torch.no_grad()
def test_value_neurons_are_what_every_query_head_of_their_group_reads(config):
    """With one token, attention weights are [1]: each query head's pre-out is exactly the value of
    the kv head it reads, h // (n_heads / n_kv_heads). So the values the attn-value hooks see,
    repeated over each group, must equal the pre-out: a hook on the queries or keys of a fused
    projection, or a wrong group, fails."""
    model = tiny_model(config)
    heads, head_dim = _heads(model.config)
    n_kv = getattr(model.config, "num_key_value_heads", None) or heads
    ids = torch.tensor([[7]])
    site, values = _capture(model, "attn-value", ids)
    _, pre_out = _capture(model, "attn-pre-out", ids)
    assert site.n_neurons == n_kv * head_dim
    for v, p in zip(values, pre_out, strict=True):
        per_kv = v.reshape(n_kv, head_dim)
        expected = per_kv.repeat_interleave(heads // n_kv, dim=0).reshape(-1)
        assert v.abs().max() > 0
        assert torch.allclose(p.reshape(-1), expected, atol=1e-5)


def _output_projection(model, layer):
    block_name, proj_name = ATTENTION[model.config.model_type]
    return _get(_get(_layers(model)[layer], block_name), proj_name)


def _zero_columns(proj) -> set[int]:
    from transformers.pytorch_utils import Conv1D

    w = proj.weight.T if isinstance(proj, Conv1D) else proj.weight  # [out, in]
    return set((w == 0).all(0).nonzero().flatten().tolist())


@pytest.mark.parametrize("config", ["llama", "gemma", "gpt2", "gpt_neox", "roberta"])
@torch.no_grad()
def test_deleting_a_value_neuron_cuts_every_output_column_it_feeds(config):
    """Deleting value dimension d of kv head g zeroes output-projection column h x d_head + d of
    every query head h reading g, and no other column (llama: 4 heads on 2 kv heads; gemma: 4 on 1)."""
    model = tiny_model(config)
    heads, head_dim = _heads(model.config)
    n_kv = getattr(model.config, "num_key_value_heads", None) or heads
    group = heads // n_kv
    site = resolve_site(model, "attn-value", REGISTRY.architectures)
    g, d = n_kv - 1, 3
    site.delete(1, torch.tensor([g * head_dim + d]))
    expected = {(g * group + i) * head_dim + d for i in range(group)}
    assert _zero_columns(_output_projection(model, 1)) == expected
    assert _zero_columns(_output_projection(model, 0)) == set()
    # and the value is gone: with one token, the pre-out of those columns is 0 (bias included)
    _, pre_out = _capture(model, "attn-pre-out", torch.tensor([[7]]))
    assert all(pre_out[1].reshape(-1)[c] == 0 for c in expected)
    assert (pre_out[1].reshape(-1) != 0).sum() == heads * head_dim - len(expected)


@pytest.mark.parametrize("config", [c for c in TINY_CONFIGS if c.split("-")[0] in ATTENTION])
@torch.no_grad()
def test_a_head_is_the_root_mean_square_of_its_pre_out_neurons(config):
    model = tiny_model(config)
    heads, head_dim = _heads(model.config)
    ids = torch.arange(12).reshape(1, 12) % model.config.vocab_size
    site, sizes = _capture(model, "attn-head", ids)
    _, pre_out = _capture(model, "attn-pre-out", ids)
    assert site.n_neurons == heads
    for size, p in zip(sizes, pre_out, strict=True):
        by_hand = p.reshape(*p.shape[:-1], heads, head_dim).square().mean(-1).sqrt()
        assert torch.allclose(size, by_hand, atol=1e-6)
    site.delete(0, torch.tensor([heads - 1]))
    assert _zero_columns(_output_projection(model, 0)) == set(range((heads - 1) * head_dim, heads * head_dim))
