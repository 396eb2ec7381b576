"""The plugin against unlearn's conformance kit, plus what is special about this method."""

import torch
from unlearn_core import load_plugins, resolve_site
from unlearn_core.testing import conformance_test, make_context, tiny_model

from unlearn_magnitude import MagnitudeOptions, MagnitudeScorer, output_norms

# Options validate, scores are [L, N] and finite, exact counts, inert neurons, same seed same
# neurons: on a tiny model of every architecture unlearn supports.
test_conformance = conformance_test("magnitude")
test_conformance_abs = conformance_test("magnitude", options={"importance": "abs", "retain_weight": 0.0})


def test_output_norms_are_the_output_projection_columns():
    model = tiny_model("llama")
    site = resolve_site(model, "mlp", load_plugins().architectures)
    norms = output_norms(model, site, torch.zeros(1, 4, dtype=torch.long))
    expected = torch.stack([layer.mlp.down_proj.weight.double().norm(dim=0) for layer in model.model.layers])
    torch.testing.assert_close(norms, expected)


def test_gpt2_conv1d_columns_are_found_too():
    model = tiny_model("gpt2")
    site = resolve_site(model, "mlp", load_plugins().architectures)
    norms = output_norms(model, site, torch.zeros(1, 4, dtype=torch.long))
    expected = torch.stack([block.mlp.c_proj.weight.double().norm(dim=1) for block in model.transformer.h])
    torch.testing.assert_close(norms, expected)


def test_a_silent_neuron_writing_nothing_scores_zero():
    registry = load_plugins()
    model = tiny_model("llama")
    site = resolve_site(model, "mlp", registry.architectures)
    site.delete(1, torch.tensor([5]))
    scores = MagnitudeScorer(MagnitudeOptions()).score(make_context(model, site, registry))
    assert scores[1, 5] == 0 and scores.shape == site.shape
