"""Run the idiom corpus through connectome's soundness protocol and print one line per (entry, tracer).

    python tests/idioms/probe.py [--tracer fx,export,export-core,auto] [--only SUBSTRING] [--corpus]

``--corpus`` checks the corpus instead of the engine: every model runs, builds identically twice, its kill
changes some weight, and some weight slice is truly ineffective after the kill (``registry.witnesses``).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # tests/: import idioms


def _engine(names: list[str], tracers: list[str]) -> int:
    from idioms.registry import IDIOMS, check

    counts = {t: {"sound": 0, "unsound": 0, "error": 0, "no_ineffective": 0, "bad_keys": 0, "unsupported": 0}
              for t in tracers}
    print(f"{'entry':36} {'tracer':11} {'sound':6} {'ineff':6} {'eff/nonzero':>11} unsup  bad_keys / error")
    for name in names:
        idiom = IDIOMS[name]
        for tracer in tracers:
            if tracer not in idiom.tracers:
                continue
            start = time.perf_counter()
            try:
                r = check(idiom, tracer)
            except Exception as e:     # the harness itself (build, kill): a corpus bug, say so loudly
                r = {"sound": None, "ineffective_found": None, "bad_keys": [], "unsupported": None,
                     "params_effective": None, "params_nonzero": None,
                     "error": f"HARNESS {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
            secs = time.perf_counter() - start
            c = counts[tracer]
            if r["error"]:
                c["error"] += 1
            elif r["sound"]:
                c["sound"] += 1
            else:
                c["unsound"] += 1
            if r["error"] is None and not r["ineffective_found"]:
                c["no_ineffective"] += 1
            c["bad_keys"] += bool(r["bad_keys"])
            c["unsupported"] += bool(r["unsupported"])
            ratio = "" if r["params_nonzero"] is None else f"{r['params_effective']}/{r['params_nonzero']}"
            tail = r["error"] or (", ".join(r["bad_keys"]) if r["bad_keys"] else "")
            if r.get("unsupported_ops"):
                tail += (" " if tail else "") + "unsupported: " + ", ".join(r["unsupported_ops"])
            if r.get("culprits"):
                tail += (" " if tail else "") + "culprits: " + ", ".join(r["culprits"])
            print(f"{name:36} {tracer:11} {_b(r['sound']):6} {_b(r['ineffective_found']):6} {ratio:>11} "
                  f"{'' if r['unsupported'] is None else r['unsupported']:>5}  {tail}  [{secs:.2f}s]", flush=True)
    print("\nsummary (per tracer): sound / unsound / error; no ineffective found; with bad keys; with unsupported ops")
    for t, c in counts.items():
        print(f"  {t:11} {c['sound']:4} / {c['unsound']:3} / {c['error']:3};  no_ineffective {c['no_ineffective']:3};"
              f"  bad_keys {c['bad_keys']:3};  unsupported {c['unsupported']:3}")
    return 0


def _corpus(names: list[str]) -> int:
    from idioms.registry import IDIOMS, outputs, prepare, witnesses

    failures = 0
    for name in names:
        idiom = IDIOMS[name]
        problems = []
        try:
            plain = idiom.build().eval()
            before = _state(plain)
            outputs(plain, idiom.inputs)
            idiom.kill(plain)
            after = _state(plain)
            if before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before):
                problems.append("kill changed nothing")
            a, _ = prepare(idiom)
            b, _ = prepare(idiom)
            if not all(torch.equal(u, v) for u, v in zip(outputs(a, idiom.inputs), outputs(b, idiom.inputs))):
                problems.append("two builds differ")
            if any(not torch.isfinite(o).all() for o in outputs(a, idiom.inputs)):
                problems.append("non-finite output")
            by_values = set(witnesses(idiom, kill=False))
            found = [w for w in witnesses(idiom) if w not in by_values]
            if not found:
                problems.append("the kill made no weight slice ineffective")
        except Exception as e:
            problems.append(f"{type(e).__name__}: {e}")
            found = []
        failures += bool(problems)
        shown = ", ".join(found[:4]) + (f" (+{len(found) - 4})" if len(found) > 4 else "")
        print(f"{name:36} {idiom.family:8} {'FAIL ' + '; '.join(problems) if problems else 'ok'}  {shown}",
              flush=True)
    print(f"\n{len(names) - failures}/{len(names)} entries ok")
    return 1 if failures else 0


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in list(model.named_parameters()) + list(model.named_buffers())}


def _b(v) -> str:
    return "-" if v is None else ("yes" if v else "NO")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tracer", default="fx,export,export-core,auto")
    p.add_argument("--only", default="", help="run entries whose name contains this")
    p.add_argument("--corpus", action="store_true", help="check the corpus itself, not the engine")
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.set_num_threads(1)
    from idioms.registry import IDIOMS
    names = [n for n in IDIOMS if args.only in n]
    start = time.perf_counter()
    rc = _corpus(names) if args.corpus else _engine(names, [t.strip() for t in args.tracer.split(",") if t.strip()])
    print(f"{len(names)} entries in {time.perf_counter() - start:.1f}s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
