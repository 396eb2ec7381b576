"""The `unlearn` command line: bench, plugins, ls."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from pydantic import ValidationError

from .config import PRESETS, BenchConfig
from .errors import MethodFailed, PluginFailed, UsageError, did_you_mean, one_line, unknown_name
from .models import DEFAULT_MODEL, EMBEDDED_MODELS
from .records import loads_json
from .redact import redact_text


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit 2, instead of usage + message
        raise UsageError(f"{message}{self._suggestion(message)} (see: {self.prog} --help)")

    def _suggestion(self, message: str) -> str:
        """' (did you mean ...?)' for a mistyped flag or subcommand."""
        if m := re.match(r"unrecognized arguments: (\S+)", message):
            word = m.group(1).split("=")[0]
            flags = [f for a in self._actions for f in a.option_strings if f.startswith("--")]
            return did_you_mean(word, flags) if word.startswith("-") else ""
        if m := re.match(r"argument \S+: invalid choice: '([^']*)'", message):
            choices = next((a.choices for a in self._actions if isinstance(a.choices, dict)), {})
            return did_you_mean(m.group(1), choices) if "did you mean" not in message else ""
        return ""

    def parse_args(self, args=None, namespace=None):
        # A mistyped flag of a subcommand is reported by the subcommand's parser, which knows its flags.
        namespace, extra = self.parse_known_args(args, namespace)
        if extra:
            parser = self._subparser(namespace)
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        return namespace

    def _subparser(self, namespace) -> argparse.ArgumentParser:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action.choices.get(getattr(namespace, action.dest, None), self)
        return self


def _option(text: str, flag: str = "--option") -> tuple[str, str, object]:
    """'method.key=value' -> (method, key, value); the value is JSON when it parses, else a string."""
    head, eq, raw = text.partition("=")
    method, dot, key = head.partition(".")
    if not (eq and dot and method and key):  # not echoed: a key pasted alone would be printed
        raise UsageError(f"{flag} expects METHOD.KEY=VALUE (e.g. selective.importance=abs), got "
                         f"{len(text)} characters without that form")
    try:
        value = loads_json(raw)
    except json.JSONDecodeError:
        value = raw
    except ValueError as e:  # nested too deeply
        raise UsageError(f"{flag} {head}: {e}") from None
    return method, key, value


def build_parser(commands: dict | None = None) -> argparse.ArgumentParser:
    p = _Parser(prog="unlearn", description="Compare unlearning-by-pruning methods on one harness.")
    p.add_argument("--plugins", metavar="A,B", help="load only these plugins (entry-point names, see "
                   "`unlearn plugins`; '' loads none); overrides $UNLEARN_PLUGINS")
    sub = p.add_subparsers(dest="command", parser_class=_Parser, required=True)

    b = sub.add_parser("bench", help="run methods and compare them")
    b.add_argument("--method", required=True, help="comma list, e.g. selective,random")
    b.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"embedded ({', '.join(EMBEDDED_MODELS)}), a folder, a .gguf file or a hub id")
    b.add_argument("--forget", default="python", help="corpus to forget (see `unlearn ls corpora`)")
    b.add_argument("--retain", default="shakespeare", help="corpus to keep")
    b.add_argument("--site", default="mlp", help="neuron site, or a comma list to run each method on "
                   "each: mlp (default), attn-pre-out, attn-value, attn-head (see `unlearn ls architectures`)")
    b.add_argument("--preset", default="cpu", help=f"one of {', '.join(PRESETS)} (default: cpu)")
    b.add_argument("--steps", type=int, help="pruning steps")
    b.add_argument("--fraction", type=float, help="share of the site's neurons deleted per step")
    b.add_argument("--count", type=int, help="neurons deleted per step (instead of --fraction)")
    b.add_argument("--tokens", type=int, help="statistics tokens per corpus")
    b.add_argument("--eval-tokens", type=int, help="held-out evaluation tokens per corpus")
    b.add_argument("--window", type=int, help="tokens per window")
    b.add_argument("--eval", default="tokens",
                   help="comma list of evaluations: tokens (always) and registered harnesses, e.g. "
                        "tokens,cloze,toxicity (see `unlearn ls evaluations`)")
    b.add_argument("--batch-size", type=int, default=8)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    b.add_argument("--importance", help="comma list of freq, abs, rms, std: a record for each, for every "
                   "method with an importance option (selective)")
    b.add_argument("-O", "--option", action="append", default=[], metavar="METHOD.KEY=VALUE",
                   help="a method option; repeatable")
    b.add_argument("--reference", action="append", default=[], metavar="METHOD.KEY=VALUE",
                   help="a published figure shown beside ours, e.g. selective.selectivity=60.2 or "
                        "selective.source='Table 2'; repeatable")
    b.add_argument("--out", default="results", help="folder for run records and plots (default: results)")
    b.add_argument("--quiet", action="store_true", help="no progress output")

    lb = sub.add_parser("leaderboard", help="rank the runs in results folders (md, html or csv)")
    lb.add_argument("dirs", nargs="+", metavar="DIR", help="folders of run records")
    lb.add_argument("--format", help="md (default), html or csv; default from --out's suffix")
    lb.add_argument("--sort", default="selectivity", help="column to rank by (default: selectivity)")
    lb.add_argument("--out", help="write here instead of stdout")

    pl = sub.add_parser("plugins", help="list installed plugins and what they register")
    pl.add_argument("--json", action="store_true")

    ls = sub.add_parser("ls", help="list what is available")
    ls.add_argument("what", nargs="?", default="all",
                    help=f"all (default), {', '.join(_SECTIONS)}, or a component kind a plugin registers")
    for spec in (commands or {}).values():  # subcommands that plugins register
        spec.configure(sub.add_parser(spec.name, help=spec.help))
    return p


# Components get one section per kind, named by its plural ("explainers"); these kinds can be chosen
# by name, any other kind a plugin registers is listed by `unlearn ls`.
_SECTIONS = ["methods", "corpora", "architectures", "models", "presets", "explainers", "embedders",
             "classifiers", "evaluations"]


def main(argv: list[str] | None = None) -> int:
    try:
        from .plugins import load_plugins

        # --plugins decides what loads, and plugins add subcommands: read it before the full parse.
        pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
        pre.add_argument("--plugins")
        registry = load_plugins(only=pre.parse_known_args(argv)[0].plugins)
        args = build_parser(registry.commands).parse_args(argv)
        args.registry = registry
        builtin = {"bench": _bench, "plugins": _plugins, "ls": _ls, "leaderboard": _leaderboard}
        if args.command in builtin:
            return builtin[args.command](args)
        return registry.commands[args.command].run(args)
    except UsageError as e:
        _say(f"unlearn: error: {e}")
        return 2
    except MethodFailed as e:  # the other methods finished; their tables were printed
        for line in e.failures:
            _say(f"unlearn: error: {line}")
        return 1
    except PluginFailed as e:
        _say(f"unlearn: error: {e}")
        return 1
    except KeyboardInterrupt:
        _say("unlearn: interrupted; finished steps are saved, run the same command to resume")
        return 130
    except OSError as e:  # a disk full, a file vanished, a permission changed while running
        where = f" {e.filename}" if e.filename else ""
        _say(f"unlearn: error: cannot use{where}: {e.strerror or e}")
        return 2
    except Exception as e:  # a bug of ours: one line, the traceback on request
        if os.environ.get("UNLEARN_DEBUG"):
            raise
        _say(f"unlearn: internal error: {one_line(e)} (a bug in unlearn; UNLEARN_DEBUG=1 shows where)")
        return 1


def _say(line: str) -> None:
    """One line on stderr, with any URL credentials masked, whatever raised it."""
    print(" ".join(redact_text(line).split()), file=sys.stderr)


def _bench(args) -> int:
    from .bench import run_bench

    options: dict[str, dict] = {}
    for text in args.option:
        method, key, value = _option(text)
        options.setdefault(method, {})[key] = value
    references: dict[str, dict] = {}
    for text in args.reference:
        method, key, value = _option(text, "--reference")
        references.setdefault(method, {})[key] = value
    sites, importances = _list(args.site, "--site"), _list(args.importance or "", "--importance")
    if not sites:
        raise UsageError("--site: name at least one neuron site")
    fields = dict(methods=[m.strip() for m in args.method.split(",") if m.strip()],
                  model=args.model, forget=args.forget, retain=args.retain, site=sites[0],
                  preset=args.preset, steps=args.steps, fraction=args.fraction, count=args.count,
                  tokens=args.tokens, evals=[e.strip() for e in args.eval.split(",") if e.strip()],
                  eval_tokens=args.eval_tokens, window=args.window, batch_size=args.batch_size,
                  seed=args.seed, device=args.device, options=options, references=references)
    try:
        config = BenchConfig(**fields)
    except ValidationError as e:
        err = e.errors()[0]
        field, *inner = map(str, err["loc"])
        where = ".".join(x for x in inner if x not in _TYPE_TAGS)
        flag = _FLAGS.get(field, f"--{field.replace('_', '-')}") + (f" {where}" if where else "")
        raise UsageError(f"bad value for {flag}: {err['msg'].removeprefix('Value error, ')}") from None
    quiet = args.quiet or bool(os.environ.get("CI"))
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    try:
        records = run_bench(config, out=Path(args.out), registry=args.registry, progress=not quiet, log=log,
                            sites=sites, importances=importances)
    except MethodFailed as e:
        if e.records:
            _print_tables(e.records)
        raise
    _print_tables(records)
    log(f"records and plots in {args.out}/")
    return 0


# What pydantic puts in an error's location for a member of a union ('float | str').
_TYPE_TAGS = {"float", "str", "int", "bool"}
# BenchConfig fields whose flag is not --field-name.
_FLAGS = {"methods": "--method", "evals": "--eval", "options": "-O", "references": "--reference"}


def _list(text: str, flag: str) -> list[str]:
    items = [x.strip() for x in text.split(",")]
    if text and not all(items):
        raise UsageError(f"{flag} {text}: an empty name in the comma list")
    return [x for x in items if x]


def _print_tables(records) -> None:
    from .grid import site_tables
    from .table import curves_table, summary_table

    sites = list(dict.fromkeys(r.site.name for r in records))
    for site in sites:
        runs = [r for r in records if r.site.name == site]
        if len(sites) > 1:
            print(f"## {site} neurons\n")
        print(summary_table(runs))
        print()
        print("Relative top-1 drop per step:\n")
        print(curves_table(runs))
        print()
    for table in site_tables(records):
        print(f"## Selectivity (pts) by site — the paper's Table 2 — {table.title}\n")
        print(table.markdown())
        print()


def _leaderboard(args) -> int:
    from .leaderboard_report import main_leaderboard

    return main_leaderboard(args.dirs, fmt=args.format, sort=args.sort, out=args.out)


def _plugins(args) -> int:
    registry = args.registry
    rows = [{"name": p.name, "package": p.package, "version": p.version, "hooks": p.hooks,
             "registered": p.registered} for p in registry.plugins.values()]
    failed = [{"name": n, "error": e} for n, e in registry.failed.items()]
    if args.json:
        print(json.dumps({"plugins": rows, "failed": failed}, indent=2))
        return 0
    for r in rows:
        what = "; ".join(f"{k}: {', '.join(v)}" for k, v in r["registered"].items()) or "nothing"
        print(f"{r['name']} ({r['package']} {r['version']}): {what}")
    for f in failed:
        print(f"{f['name']}: FAILED: {f['error']}")
    return 0


def _ls(args) -> int:
    registry = args.registry
    sections = {
        "methods": {n: m.description for n, m in registry.methods.items()},
        "corpora": {(f"{n}:{c.argument}" if c.argument else n): c.description
                    for n, c in registry.corpora.items()},
        "architectures": {n: "model types: " + ", ".join(a.model_types) + "; sites: "
                          + ", ".join(a.sites) for n, a in registry.architectures.items()},
        "models": {n: d for n, (d, _) in EMBEDDED_MODELS.items()},
        "presets": {n: ", ".join(f"{k}={v}" for k, v in p.items()) for n, p in PRESETS.items()},
        **{f"{kind}s": {n: c.description for n, c in specs.items()}
           for kind, specs in sorted(registry.components.items())},
        "evaluations": {"tokens": "top-1, top-10, loss, perplexity (always)",
                        **{n: e.description for n, e in registry.evaluations.items()}},
    }
    for name in _SECTIONS:  # a built-in kind no plugin registered: its header, empty
        sections.setdefault(name, {})
    if args.what != "all" and args.what not in sections:
        raise unknown_name("section", args.what, ["all", *sections])
    for name, entries in sections.items():
        if args.what not in ("all", name):
            continue
        print(f"{name}:")
        for key, text in entries.items():
            print(f"  {key:<24} {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
