"""What a compressed-tensors ``sparsity_config`` in config.json claims, checked against what was read.

The config sits under ``quantization_config`` (current compressed-tensors) or ``compression_config``
(older). ``global_sparsity`` is, as llm-compressor computes it, the percentage of zero entries over
all the model's parameters; connectome measures it over every stored tensor (matrices and vectors)
and also reports it over the layers the config targets. ``sparsity_structure`` ("2:4") is checked on
the targeted layers (``targets``, by default every linear layer) minus ``ignore``.

Examples
--------
>>> find_config({"compression_config": {"sparsity_config": {"format": "dense", "global_sparsity": 50.0}}})
{'format': 'dense', 'global_sparsity': 50.0}
"""

from __future__ import annotations

import re
from typing import Any

from ..audit import Finding
from ..report import pct

__all__ = ["find_config", "config_claims", "targeted"]

TOLERANCE = 0.001  # of global sparsity: the claim is computed from the same weights, rounded per tensor


def find_config(config: dict) -> dict | None:
    """The sparsity_config of a config.json, wherever compressed-tensors put it."""
    for holder in (config.get("quantization_config"), config.get("compression_config"), config):
        if isinstance(holder, dict) and isinstance(holder.get("sparsity_config"), dict):
            return holder["sparsity_config"]
    return None


def targeted(name: str, kind: str, cfg: dict) -> bool:
    """Whether a layer is one the sparsity_config's ``targets`` name and its ``ignore`` does not."""
    module = name.removesuffix(".weight")
    targets = cfg.get("targets") or ["Linear"]
    ignore = cfg.get("ignore") or []

    def hit(pattern: str) -> bool:
        if pattern.startswith("re:"):
            return re.match(pattern[3:], module) is not None
        return pattern == module or module.endswith("." + pattern) or (pattern == "Linear" and kind == "linear")

    return any(hit(str(t)) for t in targets) and not any(hit(str(i)) for i in ignore)


def config_claims(loaded: Any, res: Any) -> tuple[dict, list[Finding]]:
    """The claims of the folder's sparsity_config, measured: (a JSON-able summary, findings)."""
    cfg = find_config(loaded.folder.config)
    if cfg is None:
        return {}, []
    chosen = [r for r in res.layers if targeted(r["name"], r["kind"], cfg)]
    numel = sum(r["numel"] for r in chosen)
    measured_all = loaded.stored_zero / loaded.stored if loaded.stored else 0.0
    measured_targets = 1 - sum(r["nonzero"] for r in chosen) / numel if numel else 0.0
    summary: dict[str, Any] = {
        "format": cfg.get("format"),
        "claimed_global_sparsity": cfg.get("global_sparsity"),
        "measured_all_tensors": measured_all,
        "measured_targeted_layers": measured_targets,
        "targeted_layers": len(chosen),
        "sparsity_structure": cfg.get("sparsity_structure"),
    }
    out = []
    claim = cfg.get("global_sparsity")
    if isinstance(claim, (int, float)):
        frac = claim / 100 if claim > 1 else float(claim)
        ok = abs(frac - measured_all) <= TOLERANCE
        out.append(
            Finding(
                "config-global-sparsity" if ok else "config-global-sparsity-wrong",
                "info" if ok else "error",
                f"config.json claims global sparsity {pct(frac)}; measured {pct(measured_all)} over all "
                f"{loaded.stored:,} stored entries ({pct(measured_targets)} over the {len(chosen)} targeted layers)",
                None,
                None if ok else "claim",
            )
        )
    structure = str(cfg.get("sparsity_structure") or "")
    m = re.fullmatch(r"(\d+):(\d+)", structure)
    if m and int(m.group(2)) in (4, 8):
        n, size = int(m.group(1)), int(m.group(2))
        bad = [
            name for name in (r["name"] for r in chosen) if name in loaded.nm and loaded.nm[name].violations(n, size)
        ]
        summary["structure_violations"] = bad
        out.append(
            Finding(
                "config-structure" if not bad else "config-structure-wrong",
                "info" if not bad else "error",
                f"config.json claims {structure} sparsity: "
                + (
                    f"it holds in all {len(chosen)} targeted layers"
                    if not bad
                    else f"{len(bad)} of {len(chosen)} targeted layers break it (first: {bad[0]})"
                ),
                bad[0] if bad else None,
                "claim" if bad else None,
            )
        )
    return summary, out
