"""Tiny random models of every supported architecture (from the conformance kit), and a saved folder.

Nothing here downloads anything: configs are written out and weights drawn from a seeded generator.
"""

from __future__ import annotations

from pathlib import Path

from unlearn_core.testing import TINY_CONFIGS, VOCAB, tiny_model, tiny_tokenizer

__all__ = ["TINY_CONFIGS", "VOCAB", "save_tiny", "tiny_model", "tiny_tokenizer"]


def save_tiny(folder: Path, name: str = "llama", seed: int = 0) -> Path:
    """A model folder that `unlearn --model FOLDER` loads like any local model."""
    tiny_model(name, seed).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder
