"""Audit a pruned checkpoint: findings, policies and reports (terminal, JSON, markdown).

A finding has a ``code``, a ``severity`` (``error`` fails the audit when its policy is enforced,
``warning`` and ``info`` never do), a one-line ``message`` and the ``layer`` it concerns (or None).
Policies pick which errors fail: ``fail_on`` holds categories ``collapse``, ``dead``, ``claim``,
``nonfinite`` and ``mask``.

Examples
--------
>>> import torch, connectome
>>> from connectome.io.checkpoint import Checkpoint
>>> m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
>>> with torch.no_grad(): _ = m[2].weight.zero_()
>>> rep = audit(Checkpoint(m, (1, 4)), claim_sparsity=0.5)
>>> rep.failed, [f.code for f in rep.findings if f.severity == "error"]
(['collapse', 'claim'], ['collapsed', 'claim-collapsed'])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from .analysis import Analysis, Analyzer
from .io.checkpoint import Checkpoint
from .io.masks import prunable_weights
from .io.spec import SpecError
from .margin import Margin, collapse_margin
from .report import compression, pct, table

__all__ = ["Finding", "AuditReport", "audit", "check_policies", "CATEGORIES"]

CATEGORIES = ("collapse", "dead", "claim", "nonfinite", "mask")
DEFAULT_FAIL_ON = ("collapse", "dead", "claim", "nonfinite")


@dataclass
class Finding:
    code: str
    severity: str  # "error", "warning" or "info"
    message: str
    layer: str | None = None
    category: str | None = None  # the --fail-on category that makes an error fail the audit


@dataclass
class AuditReport:
    analysis: Analysis
    findings: list[Finding]
    margin: Margin | None
    failed: list[str]  # categories whose policy failed (exit 1 when non-empty)
    claim_sparsity: float | None = None
    notes: list[str] = field(default_factory=list)
    source: str | None = None
    sections: dict[str, Any] = field(default_factory=dict)  # extra report parts (a model folder's blocks...)

    @property
    def passed(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        """The analysis schema plus ``findings``, the collapse margin and the policy outcome."""
        d = self.analysis.to_dict()
        d["findings"] = [{k: v for k, v in asdict(f).items() if k != "category"} for f in self.findings]
        d.update(
            self.margin.to_dict()
            if self.margin
            else {"collapse_margin": None, "bottleneck_layer": None, "cut_layers": {}, "margin_note": "not computed"}
        )
        d["claimed_sparsity"] = self.claim_sparsity
        d["failed"] = list(self.failed)
        d["passed"] = self.passed
        d["notes"] = list(self.notes)
        d["checkpoint"] = self.source
        d.update(self.sections)
        return d


def audit(
    ck: Checkpoint,
    input_shape: Sequence[int] | Sequence[Sequence[int]] | None = None,
    claim_sparsity: float | None = None,
    max_dead_units: float | None = None,
    fail_on: Iterable[str] = DEFAULT_FAIL_ON,
    margin: bool = True,
    margin_budget_s: float = 60.0,
    input_dtype: torch.dtype | None = None,
    tracer: str = "auto",
    progress: Callable[[str, float, int], None] | None = None,
    runner: Callable[[Analyzer], Analysis] | None = None,
    analyzer: Analyzer | None = None,
    compaction: bool = True,
) -> AuditReport:
    """Analyse a loaded checkpoint and check it against the policies (see the module docs).

    ``runner`` runs the analysis on the traced model when the checkpoint's masks are not all in memory
    (a model folder read lazily: :func:`connectome.hf.proxy.analyze_lazily`); ``analyzer``, when given,
    is ``ck.model`` already traced (a model folder traces while its weights are read). With ``compaction``,
    dead units found are compacted away (:func:`connectome.compact.compact`) to say what that saves."""
    fail_on = set(fail_on)
    check_policies(fail_on, claim_sparsity, max_dead_units)
    shape = input_shape or ck.input_shape
    if shape is None:
        raise SpecError("no input shape known for this architecture: pass --input-shape, e.g. 1,3,32,32")
    if not prunable_weights(ck.model):
        raise SpecError("the model has no prunable layers (linear, conv, embedding, attention): nothing to audit")
    step = progress or (lambda *a: None)
    step("trace", 0, 3)
    if analyzer is None:
        analyzer = Analyzer(ck.model, input_shape=shape, tracer=tracer, input_dtype=input_dtype)
    step("walk", 1, 3)
    res = runner(analyzer) if runner is not None else analyzer.run(ck.masks or None)
    findings = _findings(res, ck, claim_sparsity, max_dead_units)
    m = None
    if margin:
        step("collapse margin", 2, 3)
        m = collapse_margin(
            res,
            budget_s=margin_budget_s,
            progress=(lambda i, n: step("collapse margin", 2 + i / max(n, 1), 3)) if progress else None,
        )
        if m.margin is not None and not res.collapsed:
            findings.append(
                Finding(
                    "collapse-margin",
                    "info",
                    f"removing {m.margin:,} more weight(s) would disconnect the network "
                    f"(the thinnest cut runs through {', '.join(list(m.cut)[:3]) or 'no layer'})",
                    m.bottleneck_layer,
                )
            )
        elif m.note and not res.collapsed:
            findings.append(Finding("collapse-margin", "info", f"collapse margin not computed: {m.note}"))
    sections: dict[str, Any] = {}
    if compaction and not res.collapsed and any(f.code == "dead-units" for f in findings):
        from .compact.preview import preview

        message, sections["compaction"] = preview(ck.model, shape, ck.masks or None, input_dtype)
        findings.append(Finding("compaction", "info", message))
    step("done", 3, 3)
    failed = sorted(
        {f.category for f in findings if f.severity == "error" and f.category in fail_on}, key=CATEGORIES.index
    )
    return AuditReport(res, findings, m, failed, claim_sparsity, [*ck.notes, *res.notes], ck.path, sections)


def check_policies(fail_on: Iterable[str], claim_sparsity: float | None, max_dead_units: float | None) -> None:
    """Refuse unknown ``fail_on`` categories and out-of-range claims before any work (one line each).

    >>> check_policies(["collapse"], 0.9, None)
    """
    bad = set(fail_on) - set(CATEGORIES)
    if bad:
        raise SpecError(f"unknown --fail-on categories {sorted(bad)}: choose from {', '.join(CATEGORIES)}")
    if claim_sparsity is not None and not 0 <= claim_sparsity < 1:
        raise SpecError(f"--claim-sparsity must be in [0, 1), got {claim_sparsity}; for 100x compression use 0.99")
    if max_dead_units is not None and not 0 <= max_dead_units <= 1:
        raise SpecError(f"--max-dead-units is a fraction in [0, 1], got {max_dead_units}")


def _findings(res: Analysis, ck: Checkpoint, claim: float | None, max_dead: float | None) -> list[Finding]:
    out: list[Finding] = []
    d, e = res.direct_sparsity, res.effective_sparsity
    out.append(
        Finding(
            "sparsity",
            "info",
            f"direct sparsity {pct(d)} (compression {compression(res.direct_compression)}), effective "
            f"{pct(e)} ({compression(res.effective_compression)}) over {res.params_total:,} weights",
        )
    )
    if res.collapsed:
        out.append(
            Finding(
                "collapsed",
                "error",
                "no path from the inputs to the outputs remains: the network computes a constant",
                None,
                "collapse",
            )
        )
    for r in res.layers:
        if r["nonzero"] and not r["effective"] and not res.collapsed:
            out.append(
                Finding(
                    "layer-disconnected",
                    "warning",
                    f"{r['name']}: all {r['nonzero']:,} nonzero weights are ineffective (the layer is cut off)",
                    r["name"],
                )
            )
    wasted = res.params_nonzero - res.params_effective
    if wasted:
        share = wasted / res.params_nonzero
        out.append(
            Finding(
                "ineffective-weights",
                "warning",
                f"{wasted:,} nonzero weights ({pct(share)} of nonzero) are ineffective: zero them to reach "
                f"effective sparsity {pct(e)} with the same outputs",
            )
        )
    dead_total = units_total = 0
    for r in res.layers:
        if not r["units_out"]:
            continue
        dead = _dead_units(res, r)
        dead_total += dead
        units_total += r["units_out"]
        if dead and r["effective"]:
            out.append(
                Finding(
                    "dead-units",
                    "info",
                    f"{r['name']}: {dead} of {r['units_out']} units are dead "
                    f"({r['dead_in']} see no input, {r['dead_out']} reach no output)",
                    r["name"],
                )
            )
    if max_dead is not None and units_total:
        share = dead_total / units_total
        if share > max_dead:
            out.append(
                Finding(
                    "max-dead-units",
                    "error",
                    f"{dead_total:,} of {units_total:,} units are dead "
                    f"({pct(share)}), above the allowed {pct(max_dead)}",
                    None,
                    "dead",
                )
            )
    if claim is not None:
        out.extend(_claim(res, claim))
    out.extend(_tensor_findings(ck))
    if res.unsupported_ops:
        ops = sorted({u["op"] for u in res.unsupported_ops})
        out.append(
            Finding(
                "unsupported-ops",
                "warning",
                f"{len(res.unsupported_ops)} op(s) without a rule were "
                f"treated as all-to-all (sound, possibly loose): {', '.join(ops[:5])}",
            )
        )
    return out


def _dead_units(res: Analysis, row: dict) -> int:
    try:
        u = res.units(row["name"])
    except Exception:  # a layer the walk never reached: every unit is dead
        return row["units_out"]
    return int((~(u["alive_from_input"] & u["alive_to_output"])).sum())


def _claim(res: Analysis, claim: float) -> list[Finding]:
    d, e = res.direct_sparsity, res.effective_sparsity
    if res.collapsed:
        return [
            Finding(
                "claim-collapsed",
                "error",
                f"claimed sparsity {pct(claim)}: the direct sparsity is "
                f"{pct(d)}, but the network is collapsed, so no sparsity claim describes a working model",
                None,
                "claim",
            )
        ]
    if e < claim:
        return [
            Finding(
                "claim-effective",
                "error",
                f"claimed sparsity {pct(claim)} is not met: effective sparsity "
                f"{pct(e)} and direct sparsity {pct(d)} are both below it",
                None,
                "claim",
            )
        ]
    if d < claim:
        extra = round((claim - d) * res.params_total)
        return [
            Finding(
                "claim-direct",
                "error",
                f"claimed sparsity {pct(claim)} is not met by the stored weights: "
                f"direct sparsity {pct(d)} is below it, although effective sparsity {pct(e)} meets it; zero "
                f"the ineffective weights (at least {extra:,}) before publishing",
                None,
                "claim",
            )
        ]
    return [Finding("claim-met", "info", f"claimed sparsity {pct(claim)} holds: direct {pct(d)}, effective {pct(e)}")]


def _tensor_findings(ck: Checkpoint) -> list[Finding]:
    out = []
    for name, p in ck.model.state_dict().items():
        if p.untyped_storage().nbytes() < p.numel() * p.element_size():
            continue  # a broadcast placeholder (a model folder's matrix, checked as it was read)
        if p.is_floating_point() and p.numel():
            bad = int((~torch.isfinite(p)).sum())
            if bad:
                layer = name.rpartition(".")[0] or name
                out.append(Finding("nonfinite", "error", f"{name}: {bad:,} NaN/Inf value(s)", layer, "nonfinite"))
    for name, raw in ck.raw_masks.items():
        if raw.numel() and not bool(((raw == 0) | (raw == 1)).all()):
            vals = torch.unique(raw.float()[(raw != 0) & (raw != 1)])[:3].tolist()
            out.append(
                Finding(
                    "mask-not-binary",
                    "error",
                    f"{name}: mask holds values other than 0 and 1 "
                    f"(e.g. {', '.join(f'{v:g}' for v in vals)}); nonzero entries were read as kept",
                    name.rpartition(".")[0],
                    "mask",
                )
            )
    for name, n in ck.disagree.items():
        if n:
            out.append(
                Finding(
                    "mask-weight-disagree",
                    "error",
                    f"{name}: {n:,} position(s) masked out but with a "
                    f"nonzero weight: the stored weight does not match its mask (analysed as masked)",
                    name.rpartition(".")[0],
                    "mask",
                )
            )
    return out


def markdown(rep: AuditReport) -> str:
    """A model-card section: summary, per-layer table and findings, as GitHub-flavoured markdown."""
    res = rep.analysis
    status = "PASSED" if rep.passed else f"FAILED ({', '.join(rep.failed)})"
    lines = [
        "## Sparsity audit (connectome)",
        "",
        f"**Result: {status}**",
        "",
        "| | direct | effective |",
        "|---|---|---|",
        f"| sparsity | {pct(res.direct_sparsity)} | {pct(res.effective_sparsity)} |",
        f"| compression | {compression(res.direct_compression)} | {compression(res.effective_compression)} |",
        f"| weights | {res.params_nonzero:,} of {res.params_total:,} | {res.params_effective:,} of "
        f"{res.params_total:,} |",
        "",
    ]
    if rep.claim_sparsity is not None:
        lines += [f"Claimed sparsity: {pct(rep.claim_sparsity)}.", ""]
    if rep.margin is not None:
        if rep.margin.margin is not None:
            lines += [
                f"Collapse margin: {rep.margin.margin:,} weight(s) (bottleneck: `{rep.margin.bottleneck_layer}`).",
                "",
            ]
        elif rep.margin.note:
            lines += [f"Collapse margin: {rep.margin.note}.", ""]
    lines += [
        "| layer | kind | params | nonzero | effective | direct sp. | effective sp. | dead in | dead out |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in res.layers:
        n = r["numel"]
        lines.append(
            f"| `{r['name']}` | {r['kind']} | {n:,} | {r['nonzero']:,} | {r['effective']:,} | "
            f"{pct(1 - r['nonzero'] / n if n else 0)} | {pct(1 - r['effective'] / n if n else 0)} | "
            f"{r['dead_in']}/{r['units_out']} | {r['dead_out']}/{r['units_out']} |"
        )
    if rep.sections.get("blocks"):
        from .hf.report import block_markdown

        lines += ["", block_markdown(rep.sections["blocks"])]
    lines += ["", "| severity | code | finding |", "|---|---|---|"]
    for f in rep.findings:
        lines.append(f"| {f.severity} | `{f.code}` | {f.message.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def terminal(rep: AuditReport) -> str:
    """The human report: the per-layer table, then findings by severity, then the outcome."""
    lines = [table(rep.analysis), ""]
    if rep.sections.get("blocks"):
        from .hf.report import block_text

        lines += [block_text(rep.sections["blocks"]), ""]
    for note in rep.notes:
        lines.append(f"note: {note}")
    order = {"error": 0, "warning": 1, "info": 2}
    for f in sorted(rep.findings, key=lambda f: order.get(f.severity, 3)):
        lines.append(f"{f.severity.upper():<7} {f.code}: {f.message}")
    lines.append("")
    lines.append("PASSED" if rep.passed else f"FAILED: {', '.join(rep.failed)} (exit 1)")
    return "\n".join(lines)
