"""The paper's Table 2 and Figure 3: selectivity per neuron site and importance.

    from unlearn_core.grid import site_tables
    for table in site_tables(records):      # one per family of comparable runs
        print(table.markdown())

Runs on different sites never share a protocol (their neurons differ), but they are comparable
when everything else is the same: weights, corpora and token budgets, the number of steps and the
share deleted per step, evaluations. Such runs form a family (`family_key`); a family with runs on
two or more sites gets a table: a row per method and the options its runs differ in (selective's
importance), a column per site, the selectivity in the cells (mean over seeds).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from .protocol import Protocol, canonical
from .records import RunRecord
from .redact import redact_text
from .table import md_text, run_labels

SITE_ORDER = ("mlp", "attn-pre-out", "attn-value", "attn-head")  # then any other site, by name
# Protocol fields that say which site (and so how many neurons, deleted in which counts).
_SITE_FIELDS = {"model_spec", "site", "layers", "neurons_per_layer", "schedule"}


def family_key(protocol: Protocol) -> str:
    """Equal for runs that differ at most in their site."""
    fields = protocol.model_dump(mode="json", exclude=_SITE_FIELDS)
    fields["steps"] = len(protocol.schedule)
    return hashlib.sha256(canonical(fields).encode()).hexdigest()[:16]


@dataclass
class SiteTable:
    """Selectivity (points) by row label and site, for one family of runs."""

    key: str
    title: str
    sites: list[str]
    rows: dict[str, dict[str, float]] = field(default_factory=dict)  # label -> site -> mean selectivity

    def markdown(self) -> str:
        head = ["method", *self.sites]
        lines = ["| " + " | ".join(map(md_text, head)) + " |", "|" + "---|" * len(head)]
        for label, by_site in self.rows.items():
            cells = [f"{by_site[s]:.1f}" if s in by_site else "—" for s in self.sites]
            lines.append(f"| {md_text(label)} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def site_tables(records: Sequence[RunRecord]) -> list[SiteTable]:
    """A table for every family whose runs (with a summary) cover two or more sites."""
    families: dict[str, list[RunRecord]] = {}
    for r in records:
        if r.summary is not None:
            families.setdefault(family_key(Protocol.of(r)), []).append(r)
    tables = []
    for key, members in families.items():
        protocols = [Protocol.of(r) for r in members]
        sites = sorted({p.site for p in protocols},
                       key=lambda s: (SITE_ORDER.index(s) if s in SITE_ORDER else len(SITE_ORDER), s))
        if len(sites) < 2:
            continue
        values: dict[str, dict[str, list[float]]] = {}
        for r, p, label in zip(members, protocols, run_labels(members), strict=True):
            values.setdefault(label, {}).setdefault(p.site, []).append(r.summary.selectivity)
        p = protocols[0]
        title = redact_text(f"{p.model_spec} [{p.model[:8]}] · forget {p.forget.spec} → retain "
                            f"{p.retain.spec} · {len(p.schedule)} steps of {p.per_step}")
        rows = {label: {s: sum(xs) / len(xs) for s, xs in by_site.items()}
                for label, by_site in sorted(values.items())}
        tables.append(SiteTable(key, title, sites, rows))
    return tables
