"""Tiny randomly initialised models of every supported architecture, and a tiny tokenizer.

Nothing here downloads anything: configs are written out and weights drawn from a seeded generator.
"""

from __future__ import annotations

from pathlib import Path

import torch
import transformers as tf

VOCAB = 256
COMMON = dict(vocab_size=VOCAB, max_position_embeddings=128)

# name -> (config class, kwargs). Covers gated and plain MLPs, with and without biases.
TINY_CONFIGS: dict[str, tuple[str, dict]] = {
    "llama": ("LlamaConfig", dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2)),
    "llama-bias": ("LlamaConfig", dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, mlp_bias=True)),
    "mistral": ("MistralConfig", dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2)),
    "qwen2": ("Qwen2Config", dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2)),
    "gemma": ("GemmaConfig", dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=1, head_dim=8)),
    "gemma2": ("Gemma2Config", dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=1, head_dim=8)),
    "gemma3_text": ("Gemma3TextConfig", dict(hidden_size=32, intermediate_size=48,
                                             num_hidden_layers=2, num_attention_heads=4,
                                             num_key_value_heads=1, head_dim=8)),
    "opt": ("OPTConfig", dict(hidden_size=32, ffn_dim=48, num_hidden_layers=2,
                              num_attention_heads=4, word_embed_proj_dim=32)),
    "gpt2": ("GPT2Config", dict(n_embd=32, n_inner=48, n_layer=2, n_head=4, n_positions=128)),
    "gpt_neox": ("GPTNeoXConfig", dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                       num_attention_heads=4)),
}


def tiny_model(name: str, seed: int = 0) -> torch.nn.Module:
    cls_name, kwargs = TINY_CONFIGS[name]
    cfg_kwargs = dict(COMMON, **kwargs)
    if cls_name == "GPT2Config":
        cfg_kwargs.pop("max_position_embeddings")
    config = getattr(tf, cls_name)(**cfg_kwargs)
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # Large random weights and biases, so every bias really carries signal.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model.eval()


def tiny_tokenizer() -> tf.PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained in milliseconds on a few sentences."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["def f(x):\n    return x + 1\n", "Now, fair Hippolyta, our hour"],
                            trainer=trainer)
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>")


def save_tiny(folder: Path, name: str = "llama", seed: int = 0) -> Path:
    """A model folder that `unlearn --model FOLDER` loads like any local model."""
    tiny_model(name, seed).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder
