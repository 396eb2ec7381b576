"""Chat prompts of the SNIP plugin: neuron explanations, dataset concepts and relevance ratings.

The explanation prompt reproduces OpenAI's automated-interpretability `TokenActivationPairExplainer`
in its chat ("HARMONY_V4") format with the ORIGINAL few-shot examples, the 4k-context variant and
`repeat_non_zero_activations=True`. Sources: openai/automated-interpretability,
neuron-explainer/neuron_explainer/explanations/{explainer.py, prompt_builder.py, few_shot_examples.py}
and activations/activation_records.py. As in the original chat format, the last user message ends
with the completion prefix ("...: the main thing this neuron does is find") and the few-shot
assistant turns show the model how to continue it; `clean_explanation` strips a repeated prefix.

Everything here is a pure function from data to `[{"role": ..., "content": ...}]` or back; bump
`PROMPT_VERSION` whenever a prompt text changes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from unlearn_core import ActivationRecord, NeuronRecords

PROMPT_VERSION = "neuron-explainer-v1"  # bump when a prompt changes: the store keys on it

Message = dict[str, str]

EXPLANATION_PREFIX = "the main thing this neuron does is find"

SYSTEM_PROMPT = (
    "We're studying neurons in a neural network. Each neuron looks for some particular "
    "thing in a short document. Look at the parts of the document the neuron activates for "
    "and summarize in a single sentence what the neuron is looking for. Don't list "
    "examples of words.\n\nThe activation format is token<tab>activation. Activation "
    "values range from 0 to 10. A neuron finding what it's looking for is represented by a "
    "non-zero activation value. The higher the activation value, the stronger the match."
)

REPEAT_ZEROS_BELOW = 0.2  # repeat the non-zero activations when fewer than 20 % are non-zero


def _rec(tokens: list[str], activations: list[float]) -> ActivationRecord:
    assert len(tokens) == len(activations)
    return ActivationRecord(tokens=tokens, activations=activations)


# FewShotExampleSet.ORIGINAL: (activation records, explanation), copied from few_shot_examples.py.
FEW_SHOT_EXAMPLES: tuple[tuple[tuple[ActivationRecord, ...], str], ...] = (
    ((
        _rec(["t", "urt", "ur", "ro", " is", " fab", "ulously", " funny", " and", " over", " the", " top",
              " as", " a", " '", "very", " sneaky", "'", " but", "ler", " who", " excel", "s", " in", " the",
              " art", " of", " impossible", " disappearing", "/", "re", "app", "earing", " acts"],
             [-0.71, -1.85, -2.39, -2.58, -1.34, -1.92, -1.69, -0.84, -1.25, -1.75, -1.42, -1.47, -1.51,
              -0.8, -1.89, -1.56, -1.63, 0.44, -1.87, -2.55, -2.09, -1.76, -1.33, -0.88, -1.63, -2.39,
              -2.63, -0.99, 2.83, -1.11, -1.19, -1.33, 4.24, -1.51]),
        _rec(["esc", "aping", " the", " studio", " ,", " pic", "col", "i", " is", " warm", "ly", " affecting",
              " and", " so", " is", " this", " ad", "roit", "ly", " minimalist", " movie", " ."],
             [-0.69, 4.12, 1.83, -2.28, -0.28, -0.79, -2.2, -2.03, -1.77, -1.71, -2.44, 1.6, -1, -0.38,
              -1.93, -2.09, -1.63, -1.94, -1.82, -1.64, -1.32, -1.92]),
    ), "present tense verbs ending in 'ing'"),
    ((
        _rec(["as", " sac", "char", "ine", " movies", " go", " ,", " this", " is", " likely", " to", " cause",
              " massive", " cardiac", " arrest", " if", " taken", " in", " large", " doses", " ."],
             [-0.14, -1.37, -0.68, -2.27, -1.46, -1.11, -0.9, -2.48, -2.07, -3.49, -2.16, -1.79, -0.23,
              -0.04, 4.46, -1.02, -2.26, -2.95, -1.49, -1.46, -0.6]),
        _rec(["shot", " perhaps", " '", "art", "istically", "'", " with", " handheld", " cameras", " and",
              " apparently", " no", " movie", " lights", " by", " jo", "aquin", " b", "aca", "-", "as", "ay",
              " ,", " the", " low", "-", "budget", " production", " swings", " annoy", "ingly", " between",
              " vert", "igo", " and", " opacity", " ."],
             [-0.09, -3.53, -0.72, -2.36, -1.05, -1.12, -2.49, -2.14, -1.98, -1.59, -2.62, -2, -2.73,
              -2.87, -3.23, -1.11, -2.23, -0.97, -2.28, -2.37, -1.5, -2.81, -1.73, -3.14, -2.61, -1.7,
              -3.08, -4, -0.71, -2.48, -1.39, -1.96, -1.09, 4.37, -0.74, -0.5, -0.62]),
    ), "words related to physical medical conditions"),
    ((
        _rec(["the", " sense", " of", " together", "ness", " in", " our", " town", " is", " strong", " ."],
             [0, 0, 0, 1, 2, 0, 0.23, 0.5, 0, 0, 0]),
        _rec(["a", " buoy", "ant", " romantic", " comedy", " about", " friendship", " ,", " love", " ,",
              " and", " the", " truth", " that", " we", "'re", " all", " in", " this", " together", " ."],
             [-0.15, -2.33, -1.4, -2.17, -2.53, -0.85, 0.23, -1.89, 0.09, -0.47, -0.5, -0.58, -0.87, 0.22,
              0.58, 1.34, 0.98, 2.21, 2.84, 1.7, -0.89]),
    ), "phrases related to community"),
)


# ---- the activation format --------------------------------------------------------------------

def max_activation(records: Sequence[ActivationRecord]) -> float:
    """Largest relu'd activation over all records (0.0 when there is none)."""
    return max((max(0.0, x) for r in records for x in r.activations), default=0.0)


def scale_activations(acts: Sequence[float], max_activation: float) -> list[int]:
    """Integers 0-10: min(10, floor(10 * relu(x) / max)); all 0 when max <= 0."""
    if max_activation <= 0:
        return [0] * len(acts)
    return [min(10, math.floor(10 * max(0.0, x) / max_activation)) for x in acts]


def format_records(records: Sequence[ActivationRecord], max_activation: float,
                   omit_zeros: bool = False) -> str:
    """Each record as `<start>\\n`, one `token<TAB>activation` line per token, then `<end>\\n`.

    (The original prepends one more newline to the whole block; `explanation_messages` adds it.)
    """
    blocks = []
    for record in records:
        pairs = zip(record.tokens, scale_activations(record.activations, max_activation), strict=True)
        lines = [f"{token}\t{act}" for token, act in pairs if act > 0 or not omit_zeros]
        blocks.append("<start>\n" + "\n".join(lines) + "\n<end>\n")
    return "".join(blocks)


def nonzero_fraction(records: Sequence[ActivationRecord], max_activation: float) -> float:
    """Share of tokens whose scaled activation is not 0."""
    scaled = [a for r in records for a in scale_activations(r.activations, max_activation)]
    return sum(a != 0 for a in scaled) / len(scaled) if scaled else 0.0


# ---- explanations -----------------------------------------------------------------------------

def _neuron_message(records: Sequence[ActivationRecord], number: int) -> str:
    """The user message for the `number`-th neuron of the prompt, ending in the completion prefix."""
    top = max_activation(records)
    text = f"\n\nNeuron {number}\nActivations:\n{format_records(records, top)}"
    if nonzero_fraction(records, top) < REPEAT_ZEROS_BELOW:
        text += f"\nSame activations, but with all zeros filtered out:\n{format_records(records, top, True)}"
    return text + f"\nExplanation of neuron {number} behavior: {EXPLANATION_PREFIX}"


def explanation_messages(neuron: NeuronRecords, few_shot: bool = True) -> list[Message]:
    """The neuron-explainer chat prompt for one neuron (it appears as neuron 4 after 3 examples)."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT}]
    examples = FEW_SHOT_EXAMPLES if few_shot else ()
    for number, (records, explanation) in enumerate(examples, start=1):
        messages.append({"role": "user", "content": _neuron_message(records, number)})
        messages.append({"role": "assistant", "content": f" {explanation}."})
    messages.append({"role": "user", "content": _neuron_message(neuron.records, len(examples) + 1)})
    return messages


_ANSWER_LEAD = re.compile(r"^\s*(explanation of neuron \d+ behavior:\s*)?(" + re.escape(EXPLANATION_PREFIX)
                          + r"\b\s*:?)?", re.IGNORECASE)


def clean_explanation(text: str) -> str:
    """The answer without a repeated prefix, quotes, extra whitespace or a final period."""
    text = _ANSWER_LEAD.sub("", " ".join(text.split()), count=1).strip()
    for _ in range(2):  # 'x.' or '"x."' or '"x".'
        text = text[:-1].rstrip() if text.endswith(".") else text
        if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"`":
            text = text[1:-1].strip()
    return text


# ---- concepts of a dataset --------------------------------------------------------------------

def concepts_messages(samples: Sequence[str], n: int, max_chars: int = 1000,
                      max_samples: int = 20) -> list[Message]:
    """Ask which concepts a model needs to understand or generate texts like `samples`
    (the first `max_samples` of them, each cut to `max_chars`)."""
    samples = samples[:max_samples]
    shown = "\n\n".join(f"<sample {i}>\n{s[:max_chars].strip()}\n</sample {i}>"
                        for i, s in enumerate(samples, start=1))
    return [
        {"role": "system", "content": "You analyse datasets used to train and evaluate language models."},
        {"role": "user", "content": (
            f"Here are {len(samples)} samples from a dataset:\n\n{shown}\n\n"
            "What concepts are needed to understand or generate texts like these? "
            f"List up to {n} distinct concepts or areas of knowledge, most important first, "
            "each as a short noun phrase of a few words. "
            "Answer with the list only: one concept per line, no numbering, no other text.")},
    ]


_BULLET = re.compile(r"^\s*(?:[-*•·]+|\(?\d+\s*[.):]|\d+\s+-)\s*")


def parse_concepts(text: str, n: int) -> list[str]:
    """Concepts from a reply: one per line (or comma-separated on one line), bullets, numbers and
    markdown stripped, duplicates dropped (case-insensitively), at most `n`."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) == 1 and "," in lines[0]:
        lines = lines[0].split(",")
    concepts: list[str] = []
    seen: set[str] = set()
    for line in lines:
        concept = _BULLET.sub("", line).strip().strip("*\"`").strip().rstrip(".;,").strip()
        if not concept or concept.endswith(":") or concept.lower() in seen:
            continue
        seen.add(concept.lower())
        concepts.append(concept)
    return concepts[:n]


# ---- relevance ratings ------------------------------------------------------------------------

def rating_messages(explanation: str, topic: str) -> list[Message]:
    """Ask how relevant a neuron explanation is to `topic`, as one number from 0 to 10."""
    return [
        {"role": "system", "content": "You rate how related descriptions of neurons are to a topic."},
        {"role": "user", "content": (
            "A neuron in a language model was described as follows: "
            f"\"{EXPLANATION_PREFIX} {explanation.strip()}\".\n\n"
            f"Topic: {topic.strip()}\n\n"
            "On a scale from 0 (unrelated) to 10 (specifically about this topic), how related is "
            "what the neuron looks for to the topic? Answer with a single number only.")},
    ]


_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def parse_rating(text: str) -> float:
    """The first number in a reply, clipped to 0-10; ValueError when there is none."""
    match = _NUMBER.search(text)
    if match is None:
        raise ValueError(f"no rating (a number from 0 to 10) in the reply {text[:80]!r}")
    return min(10.0, max(0.0, float(match.group())))
