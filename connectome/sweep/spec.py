"""A sweep's spec: a TOML file whose list values are the axes of a grid and whose other values are fixed.

```toml
name = "lenet-connectivity"
[runs]
model = "connectome:lenet_300_100"
data = "mnist"
init = ["random", "magnitude", "snip"]      # how the initial masks are scored (connectome prune)
quota = ["uniform", "erk", "igq"]
target = ["direct", "effective"]
compression = [10, 31.6, 100]                # or sparsity = [...]
seed = [0, 1, 2]
epochs = 10
```

Every key of :class:`connectome.train.Config` may appear, plus ``model``, ``model_kwargs`` (a table
for the model's factory, ``{width = 16}``, or a list of them) and ``compression``. An axis
of inline tables moves several keys together (``prune = [{init = "random", quota = "igq"}, {init =
"snip", quota = "none"}]``); ``"none"`` stands for no value (a global selection without a quota).

Examples
--------
>>> s = Spec.parse('[runs]\\nmodel = "connectome:lenet_300_100"\\ncompression = [10, 100]\\nseed = [0, 1]\\n')
>>> [(p["sparsity"], p["seed"]) for p in s.points()]
[(0.9, 0), (0.9, 1), (0.99, 0), (0.99, 1)]
>>> s.points()[0]["id"]
'model=connectome-lenet_300_100,sparsity=0.9,seed=0'
"""

from __future__ import annotations

import itertools
import re
import tomllib
from dataclasses import dataclass, fields
from typing import Any

from ..train import Config, TrainError

__all__ = ["Spec", "SpecProblem", "KEYS"]

KEYS = {f.name for f in fields(Config)} | {"model", "model_kwargs", "compression"}


class SpecProblem(TrainError):
    """The sweep's spec cannot be run as written."""


@dataclass
class Spec:
    name: str
    runs: dict[str, Any]

    @staticmethod
    def load(path: str) -> Spec:
        try:
            with open(path, "rb") as f:
                text = f.read().decode()
        except OSError as e:
            raise SpecProblem(f"cannot read {path}: {e.strerror}") from None
        return Spec.parse(text, path)

    @staticmethod
    def parse(text: str, where: str = "the spec") -> Spec:
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise SpecProblem(f"{where} is not valid TOML: {e}") from None
        runs = doc.get("runs")
        if not isinstance(runs, dict) or "model" not in runs:
            raise SpecProblem(f'{where} needs a [runs] table with at least model = "..."')
        bundles = {
            k
            for k, v in runs.items()
            if k != "model_kwargs" and isinstance(v, list) and v and all(isinstance(x, dict) for x in v)
        }
        inner = {key for k in bundles for x in runs[k] for key in x}
        unknown = sorted((set(runs) - bundles - KEYS) | (inner - KEYS))
        if unknown:
            raise SpecProblem(f"{where}: unknown keys {', '.join(unknown)}; the keys are {', '.join(sorted(KEYS))}")
        if "compression" in runs and "sparsity" in runs:
            raise SpecProblem(f"{where}: give compression or sparsity, not both")
        kw = runs.get("model_kwargs", {})
        if not all(isinstance(x, dict) for x in (kw if isinstance(kw, list) else [kw])):
            raise SpecProblem(f"{where}: model_kwargs is a table ({{width = 16}}) or a list of tables")
        return Spec(str(doc.get("name", "sweep")), runs)

    def points(self) -> list[dict[str, Any]]:
        """Every combination of the axes, in the order the keys are written, each with an ``id``."""
        axes = {k: v if isinstance(v, list) else [v] for k, v in self.runs.items()}
        for k, v in axes.items():
            if not v:
                raise SpecProblem(f"the axis {k} is empty")
        out = []
        for combo in itertools.product(*axes.values()):
            p: dict[str, Any] = {}
            for k, v in zip(axes, combo):
                if isinstance(v, dict) and k != "model_kwargs":
                    p[k] = ",".join(str(x) for x in v.values())
                    p.update(v)
                else:
                    p[k] = v
            p = {k: None if v == "none" else v for k, v in p.items()}
            if "compression" in p:
                c = float(p.pop("compression"))
                if not 1 <= c < float("inf"):
                    raise SpecProblem(f"compression must be 1 or more and finite, not {c}")
                p["sparsity"] = round(1.0 - 1.0 / c, 12)
            varying = [k if k != "compression" else "sparsity" for k, v in axes.items() if len(v) > 1 or k == "model"]
            p["id"] = ",".join(f"{k}={_slug(p[k])}" for k in varying)
            p = {k: v for k, v in p.items() if k in KEYS or k == "id" or k in axes}
            out.append(p)
        ids = [p["id"] for p in out]
        if len(set(ids)) != len(ids):
            raise SpecProblem("two runs of the sweep are the same: an axis repeats a value")
        return out

    def config(self, point: dict[str, Any]) -> tuple[str, Config]:
        """The model spec and the training configuration of one point."""
        opts = {k: v for k, v in point.items() if k in KEYS and k not in ("model", "model_kwargs")}
        try:
            cfg = Config(**opts)
            cfg.check()
        except (TypeError, TrainError) as e:
            raise SpecProblem(f"run {point['id']}: {e}") from None
        return str(point["model"]), cfg


def _slug(v: Any) -> str:
    if isinstance(v, dict):  # model_kwargs
        return "-".join(f"{k}-{_slug(x)}" for k, x in v.items())
    return re.sub(r"[^A-Za-z0-9_.+-]", "-", f"{v:g}" if isinstance(v, float) else str(v))
