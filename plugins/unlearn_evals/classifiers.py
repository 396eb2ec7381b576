"""Toxicity classifiers: components of kind "classifier", built by name from the registry, so the
harness and the offline toxic corpus score text the same way and every record can name what scored
it. This plugin registers `detoxify` and `profanity` (CLASSIFIER_COMPONENTS, through its
`register_components` hook); another plugin registers its own the same way.

A classifier (`unlearn_core.Classifier`) maps texts to probabilities of being toxic in [0, 1]; its
component builds one as `build(device=..., **options)` and checks the options (without `device`)
with `check(**options)`. Only `detoxify` takes options: checkpoint=, config=. Nothing here
downloads anything: `detoxify` needs a local checkpoint and a local Hugging Face config folder;
`profanity` (alt-profanity-check) ships its model inside the wheel.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from unlearn_core import Classifier, ComponentSpec, UsageError, unknown_name

DETOXIFY_CHECKPOINT_ENV = "UNLEARN_DETOXIFY_CHECKPOINT"
DETOXIFY_CONFIG_ENV = "UNLEARN_DETOXIFY_CONFIG"
KIND = "classifier"
_NEEDS_PROFANITY = ("toxicity classifier 'profanity' needs alt-profanity-check: "
                    "pip install alt-profanity-check==1.9.1")


class ProfanityClassifier:
    """alt-profanity-check: a linear SVM on offensive comments (fast, offline, word-level)."""

    name = "profanity"

    def __init__(self) -> None:
        try:
            from profanity_check import predict_prob
        except ImportError:
            raise UsageError(_NEEDS_PROFANITY) from None
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


def _profanity(device: str = "cpu") -> ProfanityClassifier:
    """alt-profanity-check runs on the CPU whatever the device."""
    return ProfanityClassifier()


def _check_profanity() -> None:
    from importlib.util import find_spec

    if find_spec("profanity_check") is None:
        raise UsageError(_NEEDS_PROFANITY)


def _check_detoxify(checkpoint: str | None = None, config: str | None = None) -> None:
    detoxify_paths(checkpoint, config)


CLASSIFIER_COMPONENTS: tuple[ComponentSpec, ...] = (
    ComponentSpec(KIND, "detoxify", "a local Detoxify checkpoint (options detoxify_checkpoint, "
                  "detoxify_config; offline)", DetoxifyClassifier, _check_detoxify),
    ComponentSpec(KIND, "profanity", "alt-profanity-check: a linear SVM from its wheel (offline, word-level)",
                  _profanity, _check_profanity),
)


def installed_classifiers() -> Mapping[str, ComponentSpec]:
    """The classifiers the installed plugins register (as `load_plugins()` loads them, honouring
    $UNLEARN_PLUGINS), for callers that were handed no registry."""
    from unlearn_core import load_plugins

    return load_plugins().components.get(KIND, {})


def resolve_name(name: str, checkpoint: str | None = None,
                 classifiers: Mapping[str, ComponentSpec] | None = None) -> str:
    """'auto' is detoxify where a checkpoint is given (option or environment), else profanity; the
    name must be a registered classifier (`classifiers`, default: the installed ones)."""
    classifiers = installed_classifiers() if classifiers is None else classifiers
    if name == "auto":
        name = "detoxify" if (checkpoint or os.environ.get(DETOXIFY_CHECKPOINT_ENV)) else "profanity"
    if name not in classifiers:
        raise unknown_name("toxicity classifier", name, [*classifiers, "auto"])
    return name


def _spec(name: str, checkpoint: str | None, classifiers: Mapping[str, ComponentSpec] | None) -> ComponentSpec:
    classifiers = installed_classifiers() if classifiers is None else classifiers
    return classifiers[resolve_name(name, checkpoint, classifiers)]


def check_classifier(name: str, checkpoint: str | None = None, config: str | None = None,
                     classifiers: Mapping[str, ComponentSpec] | None = None) -> None:
    """Cheap validation before any model loads: the name is registered and its component's check
    passes (files or package there)."""
    spec = _spec(name, checkpoint, classifiers)
    if spec.check is not None:
        spec.check(**_options(spec.name, checkpoint, config))


def load_classifier(name: str = "auto", checkpoint: str | None = None, config: str | None = None,
                    device: str = "cpu", classifiers: Mapping[str, ComponentSpec] | None = None) -> Classifier:
    """Build a registered classifier (`classifiers`, default: the installed ones); UsageError (one
    line) when it cannot load."""
    spec = _spec(name, checkpoint, classifiers)
    return spec.build(device=device, **_options(spec.name, checkpoint, config))


def _options(name: str, checkpoint: str | None, config: str | None) -> dict:
    """The toxicity options' detoxify_checkpoint/_config are detoxify's; other classifiers take none."""
    return {"checkpoint": checkpoint, "config": config} if name == "detoxify" else {}
