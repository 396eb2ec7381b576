"""The conformance kits for architecture adapters and evaluations: every built-in passes, and each
deliberately broken adapter or evaluation goes red naming the check it breaks.

(The method kit has its own file, tests/test_conformance.py.)
"""

from __future__ import annotations

import itertools
import json
import random

import numpy as np
import pytest
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from unlearn_core import Architecture, EvaluationSpec, Figure, MLPSite, load_plugins, mlp_site
from unlearn_core.architectures import BUILTIN_ARCHITECTURES
from unlearn_core.testing import (
    ARCHITECTURE_CHECKS,
    EVALUATION_CHECKS,
    TINY_CONFIGS,
    ConformanceError,
    architecture_configs,
    architecture_test,
    check_architecture,
    check_evaluation,
    evaluation_test,
    make_eval_context,
    save_tiny,
    tiny_model,
    tiny_tokenizer,
)

REGISTRY = load_plugins()
LLAMA = {"llama": TINY_CONFIGS["llama"]}


# Architecture adapters ----------------------------------------------------------------------

def test_every_tiny_config_is_claimed_by_a_builtin_architecture():
    claimed = {c for a in BUILTIN_ARCHITECTURES for c in architecture_configs(a)}
    assert claimed == set(TINY_CONFIGS)
    assert set(architecture_configs(REGISTRY.architectures["llama"])) == {"llama", "llama-bias", "mistral",
                                                                          "qwen2"}


@pytest.mark.parametrize("arch", [a.name for a in BUILTIN_ARCHITECTURES])
def test_builtin_architecture_conforms(arch: str):
    check_architecture(arch, registry=REGISTRY)


# The pytest form, as a plugin writes it: one case per config (the tiny Gemma 1, 2 and 3).
test_gemma_adapter = architecture_test("gemma", registry=lambda: REGISTRY)


def test_a_plugin_supplies_its_own_tiny_config():
    """Qwen3 is claimed by the llama adapter but has no TINY_CONFIGS entry: the plugin brings one."""
    qwen3 = {"qwen3": ("Qwen3Config", dict(hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                                           num_attention_heads=4, num_key_value_heads=2, head_dim=8))}
    check_architecture("llama", qwen3, REGISTRY)
    assert tiny_model("qwen3", configs=qwen3).config.num_hidden_layers == 3
    with pytest.raises(ConformanceError, match="no tiny config of its model types"):
        check_architecture(Architecture("exotic", ("exotic",), REGISTRY.architectures["llama"].sites))


_GATED = dict(layers=("model.layers",), inputs=("mlp.gate_proj", "mlp.up_proj"), output="mlp.down_proj")


def _adapter(site_class: type[MLPSite], name: str = "broken", model_types=("llama",)) -> Architecture:
    return Architecture(name, model_types, {"mlp": lambda model: site_class(model, **_GATED)})


class _ForgetsOutput(MLPSite):
    """Zeroes the input projections' rows but leaves the output projection's column."""

    @torch.no_grad()
    def delete(self, layer, neurons):
        for module in self._inputs[layer]:
            module.weight[neurons, :] = 0


class _ForgetsBiases(MLPSite):
    """Zeroes the weights but not the biases of the input projections."""

    @torch.no_grad()
    def delete(self, layer, neurons):
        for module in self._inputs[layer]:
            module.weight[neurons, :] = 0
        self._outputs[layer].weight[:, neurons] = 0


class _TakesTheLayer(MLPSite):
    """Deletes the neurons, and with them the whole output projection of the layer."""

    @torch.no_grad()
    def delete(self, layer, neurons):
        super().delete(layer, neurons)
        self._outputs[layer].weight.zero_()


class _HooksTheMLPInput(MLPSite):
    """Hooks the MLP block's input (the residual stream), not the output projection's."""

    def __init__(self, model, **kw):
        super().__init__(model, **kw)
        self._mlps = [layer.mlp for layer in model.model.layers]

    def register_hook(self, layer, fn):
        def pre_hook(module, args):
            replaced = fn(args[0])
            return None if replaced is None else (replaced, *args[1:])

        return self._mlps[layer].register_forward_pre_hook(pre_hook)


class _IgnoresTheReturn(MLPSite):
    """Calls the hook but drops what it returns: a hook cannot change the activations."""

    def register_hook(self, layer, fn):
        def pre_hook(module, args):
            fn(args[0])

        return self._outputs[layer].register_forward_pre_hook(pre_hook)


class _HooksTwice(MLPSite):
    def register_hook(self, layer, fn):
        super().register_hook(layer, fn)
        return super().register_hook(layer, fn)


class _NeverUnhooks(MLPSite):
    def register_hook(self, layer, fn):
        super().register_hook(layer, fn)
        return _Handle()


class _Handle:
    def remove(self):  # removes nothing
        pass


class _ForgetsTheOutputParameters(MLPSite):
    def parameters(self):
        return {k: p for k, p in super().parameters().items() if "down_proj" not in k}


class _ListsWhatItDeleted(MLPSite):
    """parameters() lists only the layers deleted from so far: a snapshot taken before keeps nothing."""

    def __init__(self, model, **kw):
        super().__init__(model, **kw)
        self._touched: set[int] = set()

    def delete(self, layer, neurons):
        self._touched.add(layer)
        super().delete(layer, neurons)

    def parameters(self):
        return {k: p for k, p in super().parameters().items() if int(k.split(".")[2]) in self._touched}


def _raises(model):
    return mlp_site(("model.blocks",), ("mlp.up_proj",), "mlp.down_proj")(model)


# (adapter, config, the check that must go red, the rest of its message)
BROKEN_ADAPTERS = [
    (_adapter(_ForgetsOutput), "llama", "inert", "the logits depend on deleted neurons"),
    (_adapter(_ForgetsBiases), "llama-bias", "inert", "a deleted neuron still activates"),
    (_adapter(_TakesTheLayer), "llama", "silence", "deleting neurons changes the logits otherwise"),
    (_adapter(_HooksTheMLPInput), "llama", "shape", r"the hook of layer 0 sees activations \(2, 16, 32\)"),
    (_adapter(_IgnoresTheReturn), "llama", "real_path", "a hook of layer 0 returning changed activations"),
    (_adapter(_HooksTwice), "llama", "once", "the hook of layer 0 was called 2 times"),
    (_adapter(_NeverUnhooks), "llama", "unhooked", r"after the `with site.hooks\(...\)` block"),
    (_adapter(_ForgetsTheOutputParameters), "llama", "parameters",
     r"delete\(\) wrote model.layers.0.mlp.down_proj.weight, model.layers.1.mlp.down_proj.weight, which"),
    (_adapter(_ListsWhatItDeleted), "llama", "restore", "raised KeyError"),
    (_adapter(MLPSite, model_types=("gpt2",)), "llama", "model_type",
     "the model's config.model_type is 'llama'"),
    (Architecture("blocks", ("llama",), {"mlp": _raises}), "llama", "builds",
     "raised UsageError: cannot find the decoder layers"),
]


@pytest.mark.parametrize(("arch", "config", "check", "message"), BROKEN_ADAPTERS,
                         ids=[f"{check}-{i}" for i, (_, _, check, _) in enumerate(BROKEN_ADAPTERS)])
def test_the_kit_catches_broken_adapters(arch: Architecture, config: str, check: str, message: str):
    expected = f"architecture '{arch.name}', site 'mlp', config '{config}': {check}: {message}"
    with pytest.raises(ConformanceError, match=expected):
        check_architecture(arch, {config: TINY_CONFIGS[config]})


def test_every_architecture_check_has_a_broken_adapter():
    assert {check for _, _, check, _ in BROKEN_ADAPTERS} == set(ARCHITECTURE_CHECKS)


def test_the_same_adapter_unbroken_passes():
    """The broken adapters above differ from a conforming one only by their fault."""
    check_architecture(_adapter(MLPSite), {c: TINY_CONFIGS[c] for c in ("llama", "llama-bias")})


def test_a_second_adapter_claiming_a_model_type_is_caught():
    with pytest.raises(ConformanceError, match="'llama' is also claimed by the registered architecture"):
        check_architecture(_adapter(MLPSite), LLAMA, REGISTRY)


# Evaluations --------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "options"), [
    ("cloze", {"items": 4}),
    ("toxicity", {"samples": 4, "max_new_tokens": 8, "batch_size": 4}),
])
def test_builtin_evaluation_conforms(name: str, options: dict):
    before = torch.get_rng_state()
    result = check_evaluation(name, options, REGISTRY)
    assert result[REGISTRY.evaluations[name].figures[0].key] is not None
    assert torch.equal(torch.get_rng_state(), before)  # the kit leaves the caller's random state alone


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")

    texts: int = 2


class _Loose(BaseModel):
    texts: int = 2


_calls = itertools.count()


class _Loss:
    """A mean next-token loss on held-out retain text; `fault` breaks one rule."""

    def __init__(self, options, ctx, fault: str):
        self.fault = fault
        tok = ctx.tokenizer
        texts = list(itertools.islice(ctx.texts(ctx.retain_spec), options.texts))
        self.ids = torch.tensor([tok(t)["input_ids"][:16] for t in texts])
        self.calls = 0
        self.offset = next(_calls) if fault == "unseeded" else 0

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict:
        self.calls += 1
        out = model(self.ids, labels=self.ids)
        result = {"loss": float(out.loss), "tokens": int(self.ids.numel())}
        match self.fault:
            case "torch-rng":
                result["noise"] = float(torch.rand(()))
            case "random-rng":
                result["noise"] = random.random()
            case "numpy-rng":
                result["noise"] = float(np.random.rand())
            case "tensor":
                result["loss"] = out.loss
            case "tuple":
                result["pair"] = (1, 2)
            case "nan":
                result["loss"] = float("nan")
            case "writes":
                next(model.parameters()).mul_(2)
            case "train":
                model.train()
            case "stateful":
                result["calls"] = self.calls
            case "unseeded":
                result["offset"] = self.offset
        return result


def _evaluation(fault: str = "", name: str = "loss", options=_Options, figures=None,
                prepare=None) -> EvaluationSpec:
    figures = (Figure(key="loss", title="loss", higher_is_better=False, scale=1, unit=""),) \
        if figures is None else figures
    return EvaluationSpec(name, "mean next-token loss on retain text",
                          prepare or (lambda o, ctx: _Loss(o, ctx, fault)), options, figures)


def test_a_conforming_inline_evaluation_passes():
    result = check_evaluation(_evaluation(), {"texts": 3}, REGISTRY, "gpt2")
    assert result["tokens"] == 3 * 16 and result["loss"] > 0


# (evaluation, the check that must go red, the rest of its message)
BROKEN_EVALUATIONS = [
    (_evaluation("torch-rng"), "rng", r"evaluate\(\) changed the global random state of torch"),
    (_evaluation("random-rng"), "rng", r"evaluate\(\) changed the global random state of random"),
    (_evaluation("numpy-rng"), "rng", r"evaluate\(\) changed the global random state of numpy"),
    (_evaluation("tensor"), "json", "the result is not JSON-able: Object of type Tensor"),
    (_evaluation("nan"), "json", "the result is not JSON-able: Out of range float"),
    (_evaluation("tuple"), "json", "a JSON round trip changes the result"),
    (_evaluation("writes"), "weights", r"evaluate\(\) changed the model's parameters"),
    (_evaluation("train"), "weights", r"evaluate\(\) left the model in train mode"),
    (_evaluation("stateful"), "deterministic", "evaluating the same weights again gives another result"),
    (_evaluation("unseeded"), "deterministic", "a second prepare and evaluate with the same seed"),
    (_evaluation(figures=(Figure(key="accuracy", title="acc"),)), "figures",
     "figure 'acc' finds no finite number under key 'accuracy'"),
    (_evaluation(options=_Loose), "options", "an unknown key is accepted"),
    (_evaluation(name="tokens"), "options", "'tokens' is the bench's own evaluation"),
    (_evaluation(prepare=lambda o, ctx: {"loss": 1.0}), "prepare", r"prepare\(\) returned dict"),
    (_evaluation(prepare=lambda o, ctx: 1 / 0), "prepare", "raised ZeroDivisionError"),
]


@pytest.mark.parametrize(("spec", "check", "message"), BROKEN_EVALUATIONS,
                         ids=[f"{c}-{i}" for i, (_, c, _) in enumerate(BROKEN_EVALUATIONS)])
def test_the_kit_catches_broken_evaluations(spec: EvaluationSpec, check: str, message: str):
    with pytest.raises(ConformanceError, match=f"evaluation '{spec.name}': {check}: {message}"):
        check_evaluation(spec, {"texts": 2}, REGISTRY)


def test_every_evaluation_check_has_a_broken_evaluation():
    assert {check for _, check, _ in BROKEN_EVALUATIONS} == set(EVALUATION_CHECKS)


def test_an_evaluation_name_must_be_usable_on_the_command_line():
    with pytest.raises(ConformanceError, match="'my eval': an evaluation name must match"):
        check_evaluation(_evaluation(name="my eval"), registry=REGISTRY)


def test_unknown_options_and_unregistered_names_are_named():
    with pytest.raises(ConformanceError, match="evaluation 'nope' is not registered"):
        check_evaluation("nope", registry=REGISTRY)
    with pytest.raises(ConformanceError, match="options: \\{'texts': -1.5\\} do not validate"):
        check_evaluation(_evaluation(), {"texts": -1.5}, REGISTRY)


def test_the_eval_context_holds_held_out_text_of_both_builtin_corpora():
    ctx = make_eval_context(tiny_model("llama"), REGISTRY)
    assert (ctx.forget_spec, ctx.retain_spec) == ("python", "shakespeare")
    assert {r: w.spec for r, w in ctx.windows.items()} == {"forget": "python", "retain": "shakespeare"}
    assert ctx.windows["retain"].stats.shape[1] == ctx.windows["retain"].eval.shape[1] == 64
    held_out = next(iter(ctx.texts("shakespeare")))
    assert held_out.strip()


# The pytest form, as a plugin writes it.
test_inline_evaluation = evaluation_test(_evaluation(), {"texts": 2}, architectures=("llama", "opt"),
                                         registry=lambda: REGISTRY)


# save_tiny ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_save_tiny_writes_a_folder_that_loads_the_same_model(name: str, tmp_path):
    import tiny
    import transformers as tf

    assert tiny.save_tiny is save_tiny  # the test suite's helper is the kit's
    folder = save_tiny(tmp_path / name, name, seed=3)
    loaded = tf.AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = torch.tensor([tiny_tokenizer()("def f(x):\n    return x")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, tiny_model(name, seed=3)(ids).logits)
    assert tf.AutoTokenizer.from_pretrained(folder)("def f(x):")["input_ids"] == \
        tiny_tokenizer()("def f(x):")["input_ids"]
    assert json.loads((folder / "config.json").read_text())["vocab_size"] == 256
