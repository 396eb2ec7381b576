"""Masked language models (BERT, RoBERTa): 15 % of every window masked once per bench with a seeded
generator, statistics counted on masked positions only, token metrics scoring the prediction of
the original token at each masked position; tiny random BERT and RoBERTa end to end."""

from __future__ import annotations

import pytest
import torch

from unlearn_core import BenchConfig, run_bench
from unlearn_core.cli import main
from unlearn_core.evaluate import evaluate_tokens
from unlearn_core.masking import IGNORE, MASK_SHARE, mask_positions
from unlearn_core.models import load_model
from unlearn_core.stats import collect_statistics
from unlearn_core.testing import save_tiny, tiny_masked_tokenizer


@pytest.fixture(scope="module", params=["roberta", "bert"])
def masked_folder(request, tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp(request.param), request.param)


def _config(folder, corpora, **kw) -> BenchConfig:
    forget, retain = corpora
    return BenchConfig(**{**dict(methods=["selective", "random"], model=str(folder), forget=forget,
                                 retain=retain, preset="smoke", steps=2, fraction=0.1, tokens=512,
                                 eval_tokens=256, window=64, seed=11), **kw})


def test_masking_takes_15_percent_of_each_window_never_the_bos_and_follows_the_seed():
    windows = torch.arange(40 * 64).reshape(40, 64)
    masked = mask_positions(windows, seed=3, salt=1, skip_first=True)
    assert masked.sum(1).tolist() == [round(MASK_SHARE * 63)] * 40
    assert not masked[:, 0].any()
    assert torch.equal(masked, mask_positions(windows, seed=3, salt=1, skip_first=True))
    assert not torch.equal(masked, mask_positions(windows, seed=4, salt=1, skip_first=True))
    assert not torch.equal(masked, mask_positions(windows, seed=3, salt=2, skip_first=True))
    spread = masked[:, 1:].float().mean(0)  # every position gets masked about as often
    assert spread.min() > 0 and spread.max() < 0.5


def test_a_masked_bench_scores_the_masked_tokens(masked_folder, text_corpora, tmp_path):
    records = run_bench(_config(masked_folder, text_corpora), out=tmp_path, progress=False,
                        log=lambda m: None)
    for r in records:
        assert r.complete and r.model.model_class.endswith("ForMaskedLM")
        windows = r.forget.eval_tokens // 64
        expected = windows * round(MASK_SHARE * 63)  # the tiny tokenizer puts <s> first
        assert all(s.forget.tokens == expected for s in r.steps)
    assert records[0].steps[0] == records[1].steps[0]
    # the masks are part of the windows' identity and the same for every method
    assert records[0].forget.sha256 == records[1].forget.sha256
    again = run_bench(_config(masked_folder, text_corpora, methods=["selective"]), out=tmp_path / "again",
                      progress=False, log=lambda m: None)[0]
    assert [s.forget for s in again.steps] == [s.forget for s in records[0].steps]


@torch.no_grad()
def test_masked_metrics_and_statistics_by_hand(masked_folder, text_corpora):
    from unlearn_core import load_plugins
    from unlearn_core.bench import corpus_windows

    loaded = load_model(str(masked_folder), progress=False)
    registry = load_plugins()
    windows = corpus_windows(_config(masked_folder, text_corpora), registry, loaded.tokenizer,
                             masked=loaded.masked)["forget"]
    mask_id = tiny_masked_tokenizer().mask_token_id
    targets = windows.eval_targets
    scored = targets != IGNORE
    assert torch.equal(windows.eval == mask_id, scored)  # the mask token stands where a target is
    raw = corpus_windows(_config(masked_folder, text_corpora), registry, loaded.tokenizer)["forget"]
    assert torch.equal(targets[scored], raw.eval[scored])  # the targets are the hidden tokens
    assert torch.equal(windows.eval[~scored], raw.eval[~scored])  # and nothing else changed
    metrics = evaluate_tokens(loaded.model, windows.eval, batch_size=3, targets=targets)
    logits = loaded.model(input_ids=windows.eval).logits
    by_hand = (logits[scored].argmax(-1) == targets[scored]).float().mean().item()
    loss = torch.nn.functional.cross_entropy(logits[scored], targets[scored]).item()
    assert metrics.tokens == int(scored.sum()) and metrics.top1 == pytest.approx(by_hand)
    assert metrics.loss == pytest.approx(loss, rel=1e-5)

    from unlearn_core import resolve_site

    site = resolve_site(loaded.model, "mlp", registry.architectures)
    stats = collect_statistics(loaded.model, site, windows.stats, batch_size=4, bos=windows.bos,
                               counted=windows.stats_counted)
    assert stats.tokens == int(windows.stats_counted.sum())
    seen = []
    first_layer = lambda layer: (lambda a: seen.append(a.detach().clone())) if layer == 0 else (lambda a: None)  # noqa: E731
    with site.hooks(first_layer):
        loaded.model(input_ids=windows.stats)
    at_masks = torch.cat(seen).reshape(-1, site.n_neurons)[windows.stats_counted.reshape(-1)]
    assert torch.allclose(stats.importance("abs")[0], at_masks.abs().double().mean(0), rtol=1e-5)


def test_a_masked_lm_refuses_text_harnesses_before_loading(masked_folder, text_corpora, capsys):
    code = main(["bench", "--method", "random", "--model", str(masked_folder), "--forget", text_corpora[0],
                 "--retain", text_corpora[1], "--preset", "smoke", "--window", "64", "--eval", "tokens,cloze",
                 "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "is a masked language model" in err and err.count("\n") == 1


def test_a_masked_lm_without_a_mask_token_is_one_line(tmp_path, text_corpora, capsys):
    from unlearn_core.testing import tiny_tokenizer

    folder = save_tiny(tmp_path / "nomask", "roberta", tokenizer=tiny_tokenizer())
    code = main(["bench", "--method", "random", "--model", str(folder), "--forget", text_corpora[0],
                 "--retain", text_corpora[1], "--preset", "smoke", "--window", "64", "--quiet",
                 "--out", str(tmp_path / "out")])
    assert code == 2 and "its tokenizer has no mask token" in capsys.readouterr().err


def test_roberta_windows_fit_the_positions_after_its_padding_index():
    """RoBERTa numbers positions from pad_token_id + 1: 514 embeddings hold 512 tokens."""
    from transformers import BertConfig, RobertaConfig

    from unlearn_core import UsageError
    from unlearn_core.models import check_window

    roberta = RobertaConfig(max_position_embeddings=514, pad_token_id=1)
    check_window(roberta, 512, "roberta")
    with pytest.raises(UsageError, match=r"\(512 tokens\)"):
        check_window(roberta, 513, "roberta")
    check_window(BertConfig(max_position_embeddings=512), 512, "bert")  # BERT has no offset
