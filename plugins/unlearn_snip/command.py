"""`unlearn explain`: build (or import into) the explanation store without running a bench.

    unlearn explain --explainer tokens                        # every SmolLM2 neuron, offline
    unlearn explain --explainer local --max-neurons 200       # the embedded chat model
    unlearn explain --import explanations.jsonl --explainer openai   # published neuron-explainer files

Bad input (a number, an option, an import file, a neuron the model does not have, a store this
version cannot use) is refused before anything is stored, and where it can be, before the model loads.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import torch

from unlearn_core import (
    BenchConfig,
    CommandSpec,
    UsageError,
    check_model_spec,
    check_site_name,
    load_model,
    loads_json,
    prepare,
    resolve_site,
)

from .method import DEFAULT_STORE, ExplainedNeurons, ExplanationOptions, check_components, store_path
from .prompts import PROMPT_VERSION


def configure(p) -> None:
    p.add_argument("--model", default="smollm2")
    p.add_argument("--site", default="mlp")
    p.add_argument("--explainer", default="tokens", help="see `unlearn ls explainers`")
    p.add_argument("-O", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="an explainer option, e.g. model=gpt-4o; repeatable")
    p.add_argument("--forget", default="python", help="probe corpus (and the corpus for concepts)")
    p.add_argument("--retain", default="shakespeare", help="second probe corpus")
    # The probe is the statistics windows of the bench with the same corpora, preset, sizes and
    # seed: never its evaluation windows, and the bench reuses these explanations.
    p.add_argument("--preset", default="cpu", help="the bench preset whose windows to probe")
    p.add_argument("--tokens", type=int, help="statistics tokens per corpus (as in `unlearn bench`)")
    p.add_argument("--eval-tokens", type=int, help="evaluation tokens per corpus (as in `unlearn bench`); "
                   "their text is never probed")
    p.add_argument("--window", type=int, help="tokens per window (as in `unlearn bench`)")
    p.add_argument("--max-neurons", type=int, help="explain only this many candidates")
    p.add_argument("--store", default=str(DEFAULT_STORE))
    p.add_argument("--import", dest="import_path", metavar="PATH",
                   help="import neuron-explainer JSONL (a file, or a folder of LAYER/NEURON.jsonl)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")


def _options(pairs: list[str]) -> dict[str, Any]:
    """-O KEY=VALUE pairs; a value is JSON when it parses, else a string."""
    out: dict[str, Any] = {}
    for text in pairs:
        key, eq, raw = text.partition("=")
        if not eq or not key:  # the argument is not echoed: it may be a key pasted on its own
            raise UsageError("--option expects KEY=VALUE (e.g. -O model=gpt-4o), got "
                             + ("an empty KEY" if eq else "no '='"))
        try:
            out[key] = loads_json(raw)
        except json.JSONDecodeError:
            out[key] = raw
        except ValueError as e:  # nested too deeply
            raise UsageError(f"bad option -O {key}: {e}") from None
    return out


def run(args) -> int:
    """Build the bench's exact model, site and statistics windows with `prepare`, then explain."""
    from pydantic import ValidationError

    registry = args.registry  # what `--plugins` loaded
    try:
        options = ExplanationOptions(explainer=args.explainer, explainer_options=_options(args.option),
                                     store=args.store, max_neurons=args.max_neurons)
        config = BenchConfig(model=args.model, forget=args.forget, retain=args.retain, site=args.site,
                             preset=args.preset, tokens=args.tokens, eval_tokens=args.eval_tokens,
                             window=args.window, seed=args.seed)
    except ValidationError as e:
        err = e.errors()[0]
        raise UsageError(f"bad value for --{str(err['loc'][0]).replace('_', '-')}: {err['msg']}") from None
    if args.import_path:
        return _import(args, options, registry)
    check_components(options, registry.components)  # names, options, key and store: before any model loads
    if config.window < options.context:  # no probe window: nothing to explain from
        raise UsageError(f"--window {config.window} is shorter than the {options.context}-token probe "
                         "windows the explainer is shown")
    log = (lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    prepared = prepare(config, registry, progress=not args.quiet, log=log)
    pipeline = ExplainedNeurons(options)
    pipeline.explanations(prepared.context(0, torch.zeros(prepared.site.shape, dtype=torch.bool)))
    info = pipeline.info()
    log(f"concepts of {args.forget}: {', '.join(info['concepts'])}")
    print(f"{info['explained']} explanations in {info['store']} ({info['reused_from_store']} reused), "
          f"model {prepared.model_info.fingerprint}, explainer {info['explainer_key']}, "
          f"probe {info['probe']['key']}")
    return 0


def _import(args, options: ExplanationOptions, registry) -> int:
    """Import published explanations: the file, model, site and store are checked before the model
    loads, neuron ids against its site after, and then all of it is stored, or nothing."""
    from .store import IMPORTED, ExplanationStore, check_neurons, read_explanations

    registry.component("explainer", options.explainer)  # the name labels what is imported
    if options.explainer_options:
        raise UsageError("--import stores explanations under the explainer's name only; -O options do "
                         "not apply")
    check_model_spec(args.model)
    check_site_name(args.site, registry.architectures)
    found = read_explanations(args.import_path)
    path = store_path(options)
    ExplanationStore.check(path)
    loaded = load_model(args.model, progress=not args.quiet)
    site = resolve_site(loaded.model, args.site, registry.architectures)
    check_neurons(found, site.shape)
    fp = loaded.identity()["fingerprint"]
    with ExplanationStore(path) as store:
        store.put_imported(found, fp, site.name, options.explainer, PROMPT_VERSION, IMPORTED,
                           f"import:{args.import_path}")
    print(f"imported {len(found)} explanations into {path} (model {fp}, explainer {options.explainer})")
    return 0


EXPLAIN = CommandSpec("explain", "build the SNIP explanation store (or import published explanations)",
                      configure, run)
