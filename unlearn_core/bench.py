"""`unlearn bench`: every method on the same model, corpora and schedule, one record each.

    from unlearn_core import BenchConfig, run_bench
    records = run_bench(BenchConfig(methods=["selective", "random"]), out="results")

Flow: validate everything (methods, options, corpora, numbers, and the schedule against the
model's config) -> load the model -> build disjoint statistics/evaluation windows -> evaluate the
unpruned model once -> for each method: restore the original weights, let the scorer prepare on
them, re-apply the deletions of a record being resumed, then `steps` times score, prune,
evaluate, and write the record. A record whose run was interrupted is picked up at its last
finished step.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import BaseModel, ValidationError

from .adapters import delete_mask, resolve_site, restore, snapshot
from .config import BenchConfig
from .corpora import CorpusWindows, build_windows, parse_spec
from .errors import MethodFailed, UsageError, unknown
from .evaluate import TokenMetrics, evaluate_tokens
from .interfaces import EvalContext, MethodSpec, PruneContext
from .metrics import summarise
from .models import check_model_spec, empty_model, load_config, load_model
from .plugins import Registry, _one_line, load_plugins
from .pruning import GlobalTopK
from .records import RunRecord, StepRecord, environment, library_versions, load_record, save_record


@dataclass
class PlannedMethod:
    spec: MethodSpec
    options: BaseModel
    plugin: dict[str, str]


def plan(config: BenchConfig, registry: Registry) -> list[PlannedMethod]:
    """Check every name and option before anything heavy is loaded."""
    check_model_spec(config.model)
    for spec in (config.forget, config.retain):
        corpus, argument = parse_spec(spec, registry.corpora)
        if corpus.check is not None:
            corpus.check(argument)
    known_sites = {s for a in registry.architectures.values() for s in a.sites}
    if config.site not in known_sites:
        raise UsageError(f"unknown neuron site '{config.site}'; choose from: {', '.join(sorted(known_sites))}")
    harnesses = [e for e in config.evals if e != "tokens"]
    for name in harnesses:
        if name not in registry.evaluations:
            raise unknown("evaluation", name, ["tokens", *registry.evaluations])
    for name in config.options:
        if name not in config.methods and name not in harnesses:
            raise UsageError(f"options given for '{name}', which is not in --method or --eval")
    for name in config.references:
        if name not in config.methods:
            raise UsageError(f"references given for '{name}', which is not in --method")
    planned = []
    for name in config.methods:
        spec = registry.method(name)
        options = _options(spec.options, name, config)
        if spec.check is not None:
            spec.check(options, registry.components)
        info = registry.plugin_of("methods", name)
        planned.append(PlannedMethod(spec, options, {"name": info.name, "package": info.package,
                                                     "version": info.version}))
    return planned


def _options(model: type[BaseModel], name: str, config: BenchConfig) -> BaseModel:
    try:
        return model(**config.options.get(name, {}))
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"])
        raise UsageError(f"bad option {name}.{where}: {err['msg']}") from None


def plan_schedule(config: BenchConfig, registry: Registry) -> list[int]:
    """Cumulative neurons deleted after each step, checked against the site's size read from the
    model's config (seconds), so an impossible schedule fails before the weights load."""
    site = resolve_site(empty_model(load_config(config.model)), config.site, registry.architectures)
    return config.schedule(site.n_layers * site.n_neurons)


def plan_evaluations(config: BenchConfig, registry: Registry) -> dict[str, BaseModel]:
    """Validated options of every harness in --eval besides 'tokens' (which always runs)."""
    return {name: _options(registry.evaluations[name].options, name, config)
            for name in config.evals if name != "tokens"}


def run_key(config: BenchConfig, method: PlannedMethod) -> str:
    """Runs with the same key are the same experiment: a record with it is resumed, not redone."""
    cfg = config.model_dump(exclude={"methods", "options", "references"})
    harness_options = {k: v for k, v in config.options.items() if k in config.evals}
    blob = json.dumps({"config": cfg, "method": method.spec.name, "evaluations": harness_options,
                       "options": method.options.model_dump(mode="json")}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def corpus_windows(config: BenchConfig, registry: Registry, tokenizer, log=lambda msg: None
                   ) -> dict[str, CorpusWindows]:
    """The forget and retain corpora's statistics and evaluation windows, as every bench with this
    configuration builds them (`unlearn explain` uses the same ones, to probe statistics text)."""
    windows = {}
    for role, spec in (("forget", config.forget), ("retain", config.retain)):
        windows[role] = build_windows(spec, registry.corpora, tokenizer, config.tokens,
                                      config.eval_tokens, config.window, config.seed)
        log(f"{role}: {spec}: {windows[role].stats.numel()} statistics + "
            f"{windows[role].eval.numel()} evaluation tokens")
    return windows


def run_bench(config: BenchConfig, out: str | Path | None = None, registry: Registry | None = None,
              progress: bool = True, log=None) -> list[RunRecord]:
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    registry = registry or load_plugins()
    planned = plan(config, registry)
    eval_options = plan_evaluations(config, registry)
    schedule = plan_schedule(config, registry)
    torch.manual_seed(config.seed)
    t0 = time.perf_counter()

    log(f"loading model {config.model}")
    loaded = load_model(config.model, device=config.device, progress=progress)
    site = resolve_site(loaded.model, config.site, registry.architectures)
    model_identity = loaded.identity()
    load_s = time.perf_counter() - t0
    windows = corpus_windows(config, registry, loaded.tokenizer, log)
    original = snapshot(site)
    total = site.n_layers * site.n_neurons
    if config.schedule(total) != schedule:
        raise UsageError(f"model '{config.model}' has {total} '{config.site}' neurons, not what its "
                         "config said")

    eval_ctx = EvalContext(loaded.model, loaded.tokenizer, config.seed, config.batch_size, progress,
                           config.forget, config.retain, registry.corpora, windows)
    harnesses = {name: registry.evaluations[name].prepare(options, eval_ctx)
                 for name, options in eval_options.items()}

    def evaluate(desc: str) -> tuple[TokenMetrics, TokenMetrics, dict]:
        forget, retain = (evaluate_tokens(loaded.model, windows[r].eval, config.batch_size,
                                          progress=progress, desc=f"{desc} eval {r}")
                          for r in ("forget", "retain"))
        return forget, retain, {name: h.evaluate(loaded.model) for name, h in harnesses.items()}

    base: StepRecord | None = None  # the unpruned model, evaluated once for all methods
    records, failures = [], []
    for method in planned:
        restore(site, original)
        path = Path(out) / f"{method.spec.name}-{run_key(config, method)}.json" if out else None
        record = _resume(path, model_identity, windows)
        if record is None:
            record = RunRecord(
                method=method.spec.name, plugin=method.plugin,
                options=method.options.model_dump(mode="json"), config=config.model_dump(mode="json"),
                model=model_identity,
                site={"name": site.name, "layers": site.n_layers, "neurons_per_layer": site.n_neurons,
                      "schedule": schedule},
                forget=windows["forget"].identity(), retain=windows["retain"].identity(),
                seed=config.seed, versions=library_versions(), environment=environment(),
                timings={"load_model": round(load_s, 2)},
            )
        record.reference = config.references.get(method.spec.name) or record.reference

        def context(step: int, pruned: torch.Tensor) -> PruneContext:
            return PruneContext(loaded.model, site, windows["forget"].stats, windows["retain"].stats,
                                pruned, step, config.seed, config.batch_size, progress,
                                tokenizer=loaded.tokenizer, model_fingerprint=model_identity["fingerprint"],
                                forget_spec=config.forget, retain_spec=config.retain,
                                components=registry.components, bos=windows["forget"].bos)

        try:
            scorer = _plugin_call(method, "building the scorer", method.spec.scorer, method.options)
            pruner = (_plugin_call(method, "building the pruner", method.spec.pruner, method.options)
                      if method.spec.pruner else GlobalTopK())
            if hasattr(scorer, "prepare") and len(record.steps) <= config.steps:
                # On the original weights, before a resumed record's deletions are re-applied.
                _plugin_call(method, "prepare", scorer.prepare,
                             context(0, torch.zeros(site.shape, dtype=torch.bool)))
        except _PluginError as e:
            failures.append(str(e))
            log(f"{method.spec.name}: failed; going on with the other methods")
            continue
        pruned = _pruned_from(record, site.shape)
        delete_mask(site, pruned)
        if not record.steps:
            if base is None:
                t = time.perf_counter()
                forget, retain, others = evaluate("base")
                base = StepRecord(step=0, pruned=0, pruned_fraction=0.0, forget=forget, retain=retain,
                                  seconds=round(time.perf_counter() - t, 2), evaluations=others)
            record.steps.append(base.model_copy())
        elif len(record.steps) < config.steps + 1:
            log(f"{method.spec.name}: resuming after step {len(record.steps) - 1}")
        for step in range(len(record.steps), config.steps + 1):
            t = time.perf_counter()
            ctx = context(step, pruned)
            count = schedule[step - 1] - int(pruned.sum())
            try:
                scores = _plugin_call(method, f"score at step {step}", scorer.score, ctx)
                pruned = _plugin_call(method, f"prune at step {step}", pruner.prune, ctx, scores, count)
                if hasattr(scorer, "info"):
                    record.method_info = _plugin_call(method, f"info at step {step}", scorer.info)
            except _PluginError as e:  # finished steps stay saved; the other methods still run
                failures.append(str(e))
                log(f"{method.spec.name}: failed at step {step}; going on with the other methods")
                break
            forget, retain, others = evaluate(f"{method.spec.name} step {step}")
            n = int(pruned.sum())
            record.steps.append(StepRecord(step=step, pruned=n, pruned_fraction=n / total,
                                           forget=forget, retain=retain,
                                           seconds=round(time.perf_counter() - t, 2), evaluations=others))
            record.pruned_neurons = _indices(pruned)
            _finish(record, config)
            if path:
                save_record(record, path)
            log(f"{method.spec.name} step {step}/{config.steps}: pruned {n / total:.1%}, "
                f"forget top-1 {forget.top1:.3f}, retain top-1 {retain.top1:.3f}")
        else:  # every step ran (no break): the record is finished
            _finish(record, config)
            if path:
                save_record(record, path)
            records.append(record)
    restore(site, original)
    if out:
        from .plots import plot_runs

        plot_runs(records, Path(out), prefix=_protocol_prefix(config),
                  references=[(r.reference or {}).get("selectivity") for r in records])
    if failures:
        raise MethodFailed(failures, records)
    return records


class _PluginError(Exception):
    """A method's own code raised; the message is the one line the user sees."""


def _plugin_call(method: PlannedMethod, what: str, fn, *args):
    """Run a method's own code; whatever it raises becomes one line naming the method and its plugin."""
    try:
        return fn(*args)
    except UsageError:
        raise
    except Exception as e:
        p = method.plugin
        raise _PluginError(f"method '{method.spec.name}' (plugin '{p['name']}', {p['package']} {p['version']}) "
                           f"failed in {what}: {_one_line(e)}") from e


def _protocol_prefix(config: BenchConfig) -> str:
    """Plots of different protocols sharing one --out folder must not overwrite each other."""
    cfg = config.model_dump(exclude={"methods", "options", "device", "batch_size", "references"})
    return "plots-" + hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:8] + "-"


def _finish(record: RunRecord, config: BenchConfig) -> None:
    record.summary = summarise([s.forget.top1 for s in record.steps],
                               [s.retain.top1 for s in record.steps])
    record.complete = len(record.steps) == config.steps + 1
    record.timings["method"] = round(sum(s.seconds for s in record.steps[1:]), 2)


def _indices(mask: torch.Tensor) -> list[list[int]]:
    return [row.nonzero().flatten().tolist() for row in mask]


def _pruned_from(record: RunRecord, shape: tuple[int, int]) -> torch.Tensor:
    mask = torch.zeros(shape, dtype=torch.bool)
    for layer, idx in enumerate(record.pruned_neurons):
        mask[layer, idx] = True
    return mask


def _resume(path: Path | None, model_identity: dict, windows: dict) -> RunRecord | None:
    """The record at `path` if it belongs to this exact run (same weights and windows)."""
    if path is None or not path.exists():
        return None
    try:
        record = load_record(path)
    except (ValueError, OSError) as e:
        raise UsageError(f"cannot resume from {path}: {e}; move it away to start over") from None
    same = (record.model.get("fingerprint") == model_identity["fingerprint"]
            and record.forget.get("sha256") == windows["forget"].identity()["sha256"]
            and record.retain.get("sha256") == windows["retain"].identity()["sha256"])
    if not same:
        raise UsageError(f"{path} holds a run on other weights or windows; move it away to start over")
    return record
