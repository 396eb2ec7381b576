"""Per architecture: deleting neurons through the adapter equals zeroing their activations."""

import pytest
import torch
from tiny import TINY_CONFIGS, tiny_model

from unlearn_core.architectures import BUILTIN_ARCHITECTURES, resolve_site
from unlearn_core.errors import UsageError
from unlearn_core.sites import delete_mask, restore, snapshot

ARCHS = {a.name: a for a in BUILTIN_ARCHITECTURES}


def _ids(batch=2, length=16, seed=0):
    return torch.randint(0, 256, (batch, length), generator=torch.Generator().manual_seed(seed))


def _mask(site, share=0.3, seed=1):
    return torch.rand(site.shape, generator=torch.Generator().manual_seed(seed)) < share


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_delete_equals_zeroed_activations(name):
    pruned_model = tiny_model(name)
    hooked_model = tiny_model(name)
    site = resolve_site(pruned_model, "mlp", ARCHS)
    hooked_site = resolve_site(hooked_model, "mlp", ARCHS)
    assert site.shape == (2, 48)
    mask = _mask(site)
    ids = _ids()
    with torch.no_grad():
        before = pruned_model(ids).logits
        delete_mask(site, mask)
        after = pruned_model(ids).logits
        handles = [hooked_site.register_hook(i, lambda a, m=mask[i]: a.masked_fill(m, 0.0))
                   for i in range(site.n_layers)]
        hooked = hooked_model(ids).logits
        for h in handles:
            h.remove()
    assert not torch.allclose(before, after), "deleting 30% of neurons changed nothing"
    assert torch.equal(after, hooked)


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_deleted_neurons_are_inert_and_restore_is_exact(name):
    model = tiny_model(name)
    site = resolve_site(model, "mlp", ARCHS)
    saved = snapshot(site)
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    mask = _mask(site)
    delete_mask(site, mask)
    # Only parameters the site declares were written.
    touched = {k for k, v in model.state_dict().items() if not torch.equal(v, before_state[k])}
    assert touched and touched <= set(site.parameters())
    seen = []
    handles = [site.register_hook(i, lambda a: seen.append(a.detach().clone()))
               for i in range(site.n_layers)]
    with torch.no_grad():
        model(_ids())
    for h in handles:
        h.remove()
    for layer, acts in enumerate(seen):
        assert torch.all(acts[..., mask[layer]] == 0)
        assert torch.any(acts[..., ~mask[layer]] != 0)
    restore(site, saved)
    assert all(torch.equal(v, before_state[k]) for k, v in model.state_dict().items())


def test_biases_are_zeroed_where_the_architecture_has_them():
    model = tiny_model("llama-bias")
    site = resolve_site(model, "mlp", ARCHS)
    site.delete(0, torch.tensor([3]))
    mlp = model.model.layers[0].mlp
    assert mlp.gate_proj.bias[3] == 0 and mlp.up_proj.bias[3] == 0
    assert torch.all(mlp.gate_proj.weight[3] == 0) and torch.all(mlp.down_proj.weight[:, 3] == 0)
    assert mlp.gate_proj.bias[4] != 0


def test_gpt2_conv1d_orientation():
    model = tiny_model("gpt2")
    site = resolve_site(model, "mlp", ARCHS)
    site.delete(1, torch.tensor([5]))
    mlp = model.transformer.h[1].mlp
    assert torch.all(mlp.c_fc.weight[:, 5] == 0) and mlp.c_fc.bias[5] == 0
    assert torch.all(mlp.c_proj.weight[5, :] == 0)
    assert torch.any(mlp.c_fc.weight[:, 4] != 0)


def test_unsupported_architecture_is_one_line_listing_supported():
    import transformers as tf

    model = tf.AutoModelForCausalLM.from_config(
        tf.BloomConfig(vocab_size=64, hidden_size=16, n_layer=1, n_head=2))
    with pytest.raises(UsageError) as e:
        resolve_site(model, "mlp", ARCHS)
    msg = str(e.value)
    assert "unsupported architecture 'bloom'" in msg and "llama" in msg and "gpt2" in msg
    assert "\n" not in msg


def test_unknown_site_names_the_sites():
    with pytest.raises(UsageError, match="has no neuron site 'value'"):
        resolve_site(tiny_model("llama"), "value", ARCHS)
