"""Toxicity classifiers: a small registry, name -> factory, so the harness and the offline toxic
corpus score text the same way and every record can name what scored it.

A classifier maps texts to probabilities of being toxic in [0, 1]. Nothing here downloads anything:
`detoxify` needs a local checkpoint and a local Hugging Face config folder; `profanity`
(alt-profanity-check) ships its model inside the wheel.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

from unlearn_core import UsageError, unknown_name

DETOXIFY_CHECKPOINT_ENV = "UNLEARN_DETOXIFY_CHECKPOINT"
DETOXIFY_CONFIG_ENV = "UNLEARN_DETOXIFY_CONFIG"


@runtime_checkable
class Classifier(Protocol):
    name: str

    def scores(self, texts: Sequence[str]) -> list[float]:
        """Probability that each text is toxic."""
        ...

    def describe(self) -> dict:
        """What a record needs to say which classifier this was."""
        ...


class ProfanityClassifier:
    """alt-profanity-check: a linear SVM on offensive comments (fast, offline, word-level)."""

    name = "profanity"

    def __init__(self) -> None:
        try:
            from profanity_check import predict_prob
        except ImportError:
            raise UsageError("toxicity classifier 'profanity' needs alt-profanity-check: "
                             "pip install alt-profanity-check==1.9.1") from None
        self._predict = predict_prob

    def scores(self, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        return [float(p) for p in self._predict(list(texts))]

    def describe(self) -> dict:
        from importlib.metadata import version

        return {"name": self.name, "package": "alt-profanity-check",
                "version": version("alt-profanity-check")}


def detoxify_paths(checkpoint: str | None, config: str | None) -> tuple[Path, Path]:
    """The checkpoint file and config folder (options, else environment), checked to exist."""
    checkpoint = checkpoint or os.environ.get(DETOXIFY_CHECKPOINT_ENV)
    config = config or os.environ.get(DETOXIFY_CONFIG_ENV)
    if not checkpoint or not config:
        raise UsageError(
            "toxicity classifier 'detoxify' needs a local checkpoint and config folder (no downloads): "
            f"set detoxify_checkpoint=PATH.ckpt and detoxify_config=FOLDER, or ${DETOXIFY_CHECKPOINT_ENV} "
            f"and ${DETOXIFY_CONFIG_ENV}; or use classifier=profanity")
    ckpt, folder = Path(checkpoint), Path(config)
    if not ckpt.is_file():
        raise UsageError(f"detoxify checkpoint '{ckpt}' is not a readable file")
    if not (folder / "config.json").is_file():
        raise UsageError(f"detoxify config folder '{folder}' has no config.json (save the base model's "
                         "config and tokenizer there, e.g. bert-base-uncased)")
    return ckpt, folder


class DetoxifyClassifier:
    """A Detoxify checkpoint (e.g. toxic_original-c1212f89.ckpt), built offline from a local config
    folder. Loaded the way `detoxify.Detoxify` does, without its hub look-up of the base config."""

    name = "detoxify"

    def __init__(self, checkpoint: str | None = None, config: str | None = None, batch_size: int = 32,
                 device: str = "cpu") -> None:
        import torch
        import transformers

        ckpt, folder = detoxify_paths(checkpoint, config)
        try:
            loaded = torch.load(ckpt, map_location="cpu", weights_only=True)  # no pickled code
            arch = loaded["config"]["arch"]["args"]
            classes = list(loaded["config"]["dataset"]["args"]["classes"])
        except Exception as e:
            raise UsageError(f"'{ckpt}' is not a Detoxify checkpoint ({type(e).__name__}: {e})") from None
        rename = {"toxic": "toxicity", "identity_hate": "identity_attack", "severe_toxic": "severe_toxicity"}
        self.classes = [rename.get(c, c) for c in classes]
        if "toxicity" not in self.classes:
            raise UsageError(f"detoxify checkpoint '{ckpt}' has no 'toxicity' class: {self.classes}")
        model_class = getattr(transformers, arch["model_name"])
        cfg = transformers.AutoConfig.from_pretrained(folder, num_labels=arch["num_classes"],
                                                      local_files_only=True)
        self.model = model_class(cfg).eval().to(device)
        missing, unexpected = self.model.load_state_dict(loaded["state_dict"], strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing:
            raise UsageError(f"detoxify checkpoint '{ckpt}' does not fit {arch['model_name']}: "
                             f"{len(missing)} weights missing, e.g. {missing[0]}")
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.checkpoint, self.batch_size, self.device = str(ckpt), batch_size, device
        self._column = self.classes.index("toxicity")

    def scores(self, texts: Sequence[str]) -> list[float]:
        import torch

        out: list[float] = []
        with torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(list(texts[i:i + self.batch_size]), return_tensors="pt",
                                       truncation=True, padding=True, max_length=512).to(self.device)
                logits = self.model(**batch).logits[:, self._column]
                out += torch.sigmoid(logits.float()).tolist()
        return out

    def describe(self) -> dict:
        return {"name": self.name, "checkpoint": Path(self.checkpoint).name, "class": "toxicity"}


ClassifierFactory = Callable[..., Classifier]

CLASSIFIERS: dict[str, ClassifierFactory] = {
    "detoxify": DetoxifyClassifier,
    "profanity": ProfanityClassifier,
}


def resolve_name(name: str, checkpoint: str | None = None) -> str:
    """'auto' is detoxify where a checkpoint is given (option or environment), else profanity."""
    if name == "auto":
        return "detoxify" if (checkpoint or os.environ.get(DETOXIFY_CHECKPOINT_ENV)) else "profanity"
    if name not in CLASSIFIERS:
        raise unknown_name("toxicity classifier", name, [*CLASSIFIERS, "auto"])
    return name


def check_classifier(name: str, checkpoint: str | None = None, config: str | None = None) -> None:
    """Cheap validation before any model loads: the name exists and its files or package are there."""
    name = resolve_name(name, checkpoint)
    if name == "detoxify":
        detoxify_paths(checkpoint, config)
    elif name == "profanity":
        from importlib.util import find_spec

        if find_spec("profanity_check") is None:
            raise UsageError("toxicity classifier 'profanity' needs alt-profanity-check: "
                             "pip install alt-profanity-check==1.9.1")


def load_classifier(name: str = "auto", checkpoint: str | None = None, config: str | None = None,
                    device: str = "cpu") -> Classifier:
    """Build a registered classifier; UsageError (one line) when it cannot load."""
    name = resolve_name(name, checkpoint)
    if name == "detoxify":
        return DetoxifyClassifier(checkpoint, config, device=device)
    return CLASSIFIERS[name]()
