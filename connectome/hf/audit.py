"""``connectome audit FOLDER``: the audit of a language model folder, read one tensor at a time.

On top of the audit of any checkpoint (:func:`connectome.audit.audit`): a per-block table (dead
heads, neurons, experts; direct and effective sparsity), N:M structure per layer with an optional
claim (``claim_structure="2:4"``), and the claims a compressed-tensors ``sparsity_config`` makes.

Examples
--------
>>> import tempfile, torch, transformers
>>> cfg = transformers.LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
...                                num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=16)
>>> m = transformers.LlamaForCausalLM(cfg)
>>> with torch.no_grad(): _ = m.model.layers[0].mlp.down_proj.weight[:, :4].zero_()
>>> d = tempfile.mkdtemp(); m.save_pretrained(d)
>>> rep = audit_folder(d, progress=False)
>>> rep.sections["blocks"][0]["dead_neurons"], rep.passed
(4, True)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from ..audit import CATEGORIES, DEFAULT_FAIL_ON, AuditReport, Finding, audit, check_policies
from ..io.checkpoint import Checkpoint
from ..io.errors import SpecError
from ..io.files import check_writable
from ..report import pct
from .blocks import blocks
from .claims import config_claims
from .folder import Folder
from .masksout import write_masks
from .nm import parse_structure
from .proxy import OnesSource, analyze_lazily, effective_mask, walk_ahead
from .stitch import StackAnalyzer
from .stream import Loaded, load_folder

__all__ = ["audit_folder", "is_big", "MARGIN_LIMIT", "SEQ_LEN"]

MARGIN_LIMIT = 5_000_000  # weights: beyond, the collapse margin's graph costs more than the audit
SEQ_LEN = 8


def audit_folder(
    spec: str,
    input_shape: tuple[int, ...] | None = None,
    claim_sparsity: float | None = None,
    max_dead_units: float | None = None,
    fail_on: Iterable[str] = DEFAULT_FAIL_ON,
    claim_structure: str | None = None,
    structure_all: bool = False,
    margin: bool | None = None,
    margin_budget_s: float = 60.0,
    tracer: str = "auto",
    progress: bool | None = None,
    loaded: Loaded | None = None,
    lazy: bool | None = None,
    masks_out: str | None = None,
) -> AuditReport:
    """Audit the model folder (or locally cached hub id) ``spec``; see the module docs.

    ``lazy`` keeps no mask in memory after the read (:mod:`connectome.hf.proxy`); by default it is on
    for folders of more than :data:`~connectome.hf.folder.LAZY_LIMIT` weights. The collapse margin
    needs the masks: it is computed only for folders of at most ``MARGIN_LIMIT`` weights read eagerly.
    ``masks_out`` names a safetensors file to write the effective masks to, one tensor at a time.
    """
    structure = parse_structure(claim_structure) if claim_structure else None
    fail_on = list(fail_on)
    check_policies(fail_on, claim_sparsity, max_dead_units)
    if masks_out:
        check_writable(masks_out, (spec,))
    shape = input_shape or (1, SEQ_LEN)
    if loaded is None:

        def trace(model: torch.nn.Module) -> StackAnalyzer:
            an = StackAnalyzer(model, input_shape=shape, tracer=tracer, input_dtype=torch.long)
            an.prelower(OnesSource(model, an.names))  # while the shards are read: what reads no mask
            return an

        def walk(loaded: Loaded, peek: Any) -> None:  # the first walk, while the last matrices are counted
            loaded.walked = walk_ahead(loaded, loaded.made, peek)

        keep = not (is_big(spec) if lazy is None else lazy)
        loaded = load_folder(spec, progress, keep_masks=keep, during=trace, meanwhile=walk)
    lazy = not loaded.masks and bool(loaded.summaries)
    total = sum(math.prod(s.shape) for s in loaded.summaries.values())
    notes = []
    if margin is None:
        margin = not lazy and total <= MARGIN_LIMIT
        if not margin:
            notes.append(f"collapse margin skipped for {total:,} weights (above {MARGIN_LIMIT:,})")
    elif margin and lazy:
        raise SpecError("the collapse margin needs every mask in memory: audit with lazy=False, or with margin=False")
    ck = Checkpoint(loaded.model, shape, dict(loaded.masks), notes=notes, path=spec)
    ck.format = "hf-folder"

    def lazily(analyzer: Any) -> Any:
        res, loaded.exact = analyze_lazily(loaded, analyzer)
        return res

    rep = audit(
        ck,
        claim_sparsity=claim_sparsity,
        max_dead_units=max_dead_units,
        fail_on=fail_on,
        margin=margin,
        margin_budget_s=margin_budget_s,
        input_dtype=torch.long,
        tracer=tracer,
        runner=lazily if lazy else None,
        analyzer=loaded.made,
        compaction=False,  # the skeleton holds no weights
    )
    rep.notes += loaded.notes
    rows = blocks(rep.analysis, loaded.model, loaded.model.config)
    rep.sections["blocks"] = [r.to_dict() for r in rows]
    rep.findings += _block_findings(rows)
    rep.findings += _nonfinite(loaded)
    rep.sections["structure"] = _structure(loaded, rep.analysis)
    rep.findings += _structure_findings(rep.sections["structure"], structure, structure_all)
    claims, found = config_claims(loaded, rep.analysis)
    if claims:
        rep.sections["sparsity_config"] = claims
    rep.findings += found
    if masks_out:
        _write_effective(rep, loaded, masks_out, spec)
    enforced = set(fail_on)
    rep.failed = sorted(
        {f.category for f in rep.findings if f.severity == "error" and f.category in enforced}, key=CATEGORIES.index
    )
    return rep


def _write_effective(rep: AuditReport, loaded: Loaded, path: str, spec: str) -> None:
    eff = rep.analysis.effective_masks

    def mask(name: str) -> torch.Tensor:
        return eff[name] if loaded.exact is None else effective_mask(rep.analysis, loaded, loaded.exact, name)

    write_masks(path, [(n, tuple(m.shape)) for n, m in eff.items()], mask, (loaded.folder.path, spec))


def is_big(spec: str) -> bool:
    """Whether a folder's matrices hold more than :data:`~connectome.hf.folder.LAZY_LIMIT` weights (read
    from the shard headers)."""
    return Folder.open(spec).big


def _block_findings(rows: list) -> list[Finding]:
    out = []
    for r in rows:
        parts = []
        if r.dead_heads:
            parts.append(f"{len(r.dead_heads)} of {r.heads} attention heads dead ({_ids(r.dead_heads)})")
        if r.dead_kv_heads:
            parts.append(f"{len(r.dead_kv_heads)} of {r.kv_heads} key/value heads dead ({_ids(r.dead_kv_heads)})")
        if r.dead_neurons:
            parts.append(f"{r.dead_neurons:,} of {r.neurons:,} MLP neurons dead")
        if r.dead_experts:
            parts.append(f"{len(r.dead_experts)} of {r.experts} experts dead ({_ids(r.dead_experts)})")
        if parts:
            out.append(Finding("dead-in-block", "warning", f"{r.name}: " + "; ".join(parts), r.name))
    return out


def _ids(items: list[int], n: int = 8) -> str:
    shown = ", ".join(map(str, items[:n]))
    return shown + (f", ... {len(items) - n} more" if len(items) > n else "")


def _nonfinite(loaded: Loaded) -> list[Finding]:
    return [
        Finding("nonfinite", "error", f"{key}: {n:,} NaN/Inf value(s)", key.rpartition(".")[0], "nonfinite")
        for key, n in loaded.nonfinite.items()
    ]


def dense_by_convention(name: str, kind: str, res: Any) -> bool:
    """Embeddings, the output head and MoE routers: layers N:M pruning conventionally leaves dense."""
    leaf = name.rsplit(".", 2)
    return (
        kind == "embedding"
        or name.endswith(("lm_head.weight", "embed_out.weight", "output.weight"))
        or (len(leaf) > 1 and leaf[-2] in ("gate", "router"))
        or bool(res.kinds.get(name) == "embedding")
    )


def _structure(loaded: Loaded, res: Any) -> dict[str, dict]:
    out = {}
    kinds = {r["name"]: r["kind"] for r in res.layers}
    for name, c in loaded.nm.items():
        out[name] = {
            "groups_of_4": c.groups(4),
            "share_2_4": c.share(2, 4),
            "violations_2_4": c.violations(2, 4),
            "dense_by_convention": dense_by_convention(name, kinds.get(name, ""), res),
            **c.to_dict(),
        }
    return out


def _structure_findings(table: dict[str, dict], claim: tuple[int, int] | None, strict: bool) -> list[Finding]:
    out = []
    if claim is None:
        n_24 = sum(1 for r in table.values() if not r["violations_2_4"] and not r["dense_by_convention"])
        pool = sum(1 for r in table.values() if not r["dense_by_convention"])
        if n_24:
            out.append(
                Finding("structure", "info", f"{n_24} of {pool} layers are 2:4 sparse (every group of 4 keeps <= 2)")
            )
        return out
    n, m = claim
    bad: list[tuple[str, int, int]] = []
    excused: list[tuple[str, int, int]] = []
    for name, r in table.items():
        hist = r["groups_keeping"][str(m)]
        viol = sum(hist[n + 1 :])
        if viol:
            (excused if r["dense_by_convention"] and not strict else bad).append((name, viol, sum(hist)))
    for name, viol, groups in bad:
        out.append(
            Finding(
                "claim-structure",
                "error",
                f"{name}: {viol:,} of {groups:,} groups of {m} keep more than {n} ({pct(viol / groups)}): not {n}:{m}",
                name.rpartition(".")[0],
                "claim",
            )
        )
    for name, viol, groups in excused:
        out.append(
            Finding(
                "structure-dense-layer",
                "info",
                f"{name}: not {n}:{m} ({viol:,} of {groups:,} groups), as usual for this kind of layer (not failed; "
                "--structure-all checks it too)",
                name.rpartition(".")[0],
            )
        )
    if not bad:
        checked = sum(1 for r in table.values() if strict or not r["dense_by_convention"])
        out.append(Finding("claim-structure-met", "info", f"claimed {n}:{m} holds in all {checked} checked layers"))
    return out
