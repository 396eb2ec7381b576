"""The 'mlp' site hands its hooks the feed-forward middle neurons, computed here by hand.

For every tiny architecture, what `site.register_hook` receives must equal a hand computation
from the MLP's input x (captured with a pre-hook, independent of the adapter):

    gated (llama, mistral, qwen2, gemma*):  act(gate_proj(x)) * up_proj(x)
    gpt2:                                    act(c_fc(x))
    opt:                                     activation_fn(fc1(x))
    gpt_neox:                                act(dense_h_to_4h(x))

once with the activation module HF itself uses, and once with the activation written out from
its definition (chosen by the config's activation name), so that a hook on the wrong tensor (the
up projection's output, the pre-activation) or a changed activation is caught.
"""

import math

import pytest
import torch
from tiny import TINY_CONFIGS, tiny_model

from unlearn_core.architectures import BUILTIN_ARCHITECTURES, resolve_site

ARCHS = {a.name: a for a in BUILTIN_ARCHITECTURES}
GATED = {"llama", "llama-bias", "mistral", "qwen2", "gemma", "gemma2", "gemma3_text"}


def _gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x.pow(3))))


# Activations written out from their definitions, by the name the HF config gives them.
EXPLICIT = {
    "silu": lambda x: x * torch.sigmoid(x),
    "gelu": lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2))),
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "relu": lambda x: x.clamp_min(0),
}


def _activation_name(config) -> str:
    for key in ("hidden_activation", "hidden_act", "activation_function"):
        name = getattr(config, key, None)
        if name:
            return name
    raise AssertionError(f"no activation name in {type(config).__name__}")


def _parts(model, name: str, layer: int):
    """(module whose input is the MLP input x, input projections, activation module)."""
    if name in GATED:
        mlp = model.model.layers[layer].mlp
        return mlp, (mlp.gate_proj, mlp.up_proj), mlp.act_fn
    if name == "gpt2":
        mlp = model.transformer.h[layer].mlp
        return mlp, (mlp.c_fc,), mlp.act
    if name == "opt":
        decoder_layer = model.model.decoder.layers[layer]
        return decoder_layer.fc1, (decoder_layer.fc1,), decoder_layer.activation_fn
    if name == "gpt_neox":
        mlp = model.gpt_neox.layers[layer].mlp
        return mlp, (mlp.dense_h_to_4h,), mlp.act
    if name in ("bert", "roberta"):
        encoder_layer = getattr(model, name).encoder.layer[layer]
        return encoder_layer.intermediate, (encoder_layer.intermediate.dense,), \
            encoder_layer.intermediate.intermediate_act_fn
    raise AssertionError(f"no hand computation for '{name}'; add one when adding a tiny architecture")


def _linear64(module, x):
    """module(x) in float64, for nn.Linear ([out, in]) and GPT-2's Conv1D ([in, out])."""
    w = module.weight.detach().double()
    y = x @ (w if type(module).__name__ == "Conv1D" else w.T)
    return y if module.bias is None else y + module.bias.detach().double()


def _hand(name: str, projections, act, x, double: bool):
    """The middle neurons from the MLP input x: with HF's activation module (float32) or with
    the activation written out (float64)."""
    if double:
        x = x.double()
        proj = [_linear64(p, x) for p in projections]
    else:
        proj = [p(x) for p in projections]
    if name in GATED:
        gate, up = proj
        return act(gate) * up
    return act(proj[0])


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_site_hook_sees_the_hand_computed_middle_neurons(name):
    model = tiny_model(name)
    site = resolve_site(model, "mlp", ARCHS)
    explicit = EXPLICIT[_activation_name(model.config)]
    ids = torch.randint(0, 256, (3, 12), generator=torch.Generator().manual_seed(5))

    mlp_inputs: dict[int, list] = {i: [] for i in range(site.n_layers)}
    seen: dict[int, list] = {i: [] for i in range(site.n_layers)}
    handles = []
    for layer in range(site.n_layers):
        entry, _, _ = _parts(model, name, layer)

        def capture(module, args, kwargs, layer=layer):
            x = args[0] if args else kwargs["hidden_states"]
            mlp_inputs[layer].append(x.detach().clone())

        handles.append(entry.register_forward_pre_hook(capture, with_kwargs=True))
        handles.append(site.register_hook(layer, lambda a, layer=layer: seen[layer].append(a.detach().clone())))
    with torch.no_grad():
        model(ids)
    for h in handles:
        h.remove()

    for layer in range(site.n_layers):
        assert len(seen[layer]) == 1 and len(mlp_inputs[layer]) == 1, \
            f"{name} layer {layer}: one forward should call each hook once"
        got = seen[layer][0].reshape(-1, site.n_neurons)
        assert got.shape == (3 * 12, site.n_neurons)
        x = mlp_inputs[layer][0].reshape(-1, mlp_inputs[layer][0].shape[-1])
        _, projections, act = _parts(model, name, layer)
        with torch.no_grad():
            by_module = _hand(name, projections, act, x, double=False)
            by_formula = _hand(name, projections, explicit, x, double=True)
            pre_activation = projections[-1](x)  # the up projection / pre-activation alone
        assert not torch.allclose(by_formula.float(), pre_activation, atol=1e-3), \
            f"{name}: the hand computation cannot tell the middle neurons from the projection's output"
        torch.testing.assert_close(got, by_module, rtol=1e-5, atol=1e-5, msg=lambda m, layer=layer: (
            f"{name} layer {layer}: the site's activations are not act(...) of the MLP input as the "
            f"HF module computes it\n{m}"))
        torch.testing.assert_close(got.double(), by_formula, rtol=1e-4, atol=1e-4, msg=lambda m, layer=layer: (
            f"{name} layer {layer}: the site's activations are not the hand formula with "
            f"{_activation_name(model.config)}\n{m}"))


def test_llama_site_is_silu_gate_times_up():
    """One case spelled out with no lookup at all: llama's middle neurons are silu(gate x) * (up x)."""
    model = tiny_model("llama")
    site = resolve_site(model, "mlp", ARCHS)
    mlp = model.model.layers[1].mlp
    captured, seen = [], []
    h1 = mlp.register_forward_pre_hook(lambda m, args: captured.append(args[0].detach().clone()))
    h2 = site.register_hook(1, lambda a: seen.append(a.detach().clone()))
    with torch.no_grad():
        model(torch.arange(20).view(2, 10))
    h1.remove()
    h2.remove()
    x = captured[0]
    expected = torch.nn.functional.silu(x @ mlp.gate_proj.weight.T) * (x @ mlp.up_proj.weight.T)
    torch.testing.assert_close(seen[0], expected.detach(), rtol=1e-5, atol=1e-5)
