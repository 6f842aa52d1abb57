"""A run's folder: the checkpoint in ``torch.nn.utils.prune`` form after every epoch, the state to resume
from (optimiser, masks, generator, history), and the options it was started with.

Everything is written atomically, the state last, so an interrupted run resumes from its last whole
epoch; a run resumed with other options is refused, since its history would mix two experiments.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from typing import Any

import torch
from torch import nn

from ..io.files import write_atomic
from ..prune.save import pruned_state_dict
from .masked import Masks, TrainError

__all__ = ["Checkpointer", "model_identity", "CHECKPOINT", "STATE", "LOG"]

CHECKPOINT, STATE, LOG = "checkpoint.pt", "state.pt", "log.jsonl"
_IGNORED = ("device", "data_root")  # where a run happens, not what it is


def model_identity(model: nn.Module) -> str:
    """The model's class and a digest of its structure (modules, activations, shapes), to tell a resumed
    run's model apart from another whose weights happen to have the same names and shapes."""
    # object addresses ("<function f at 0x7f...>") differ between processes: they are not structure
    text = re.sub(r" at 0x[0-9a-fA-F]+", "", repr(model))
    text += "".join(f"{k}{tuple(v.shape)}" for k, v in model.state_dict().items())
    return f"{type(model).__qualname__}:{hashlib.sha256(text.encode()).hexdigest()[:12]}"


class Checkpointer:
    def __init__(self, folder: str, config: dict[str, Any]):
        self.folder = folder
        self.config = config
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise TrainError(f"{folder} is a file: -o names the run's folder")
        os.makedirs(folder, exist_ok=True)

    def path(self, name: str) -> str:
        return os.path.join(self.folder, name)

    def exists(self) -> bool:
        return os.path.isfile(self.path(STATE))

    def save(self, model: nn.Module, opt, masks: Masks, gen: torch.Generator, history: list, step: int, epoch: int):
        buf = io.BytesIO()
        torch.save(pruned_state_dict(model, dict(masks.masks)), buf)
        write_atomic(self.path(CHECKPOINT), buf.getvalue())
        lines = "".join(json.dumps(r) + "\n" for r in history)
        write_atomic(self.path(LOG), lines)
        state = {
            "config": self.config,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "masks": dict(masks.masks),
            "generator": gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "history": json.dumps(history),
            "step": step,
            "epoch": epoch,
        }
        buf = io.BytesIO()
        torch.save(state, buf)
        write_atomic(self.path(STATE), buf.getvalue())

    def restore(self, model: nn.Module, opt, masks: Masks, gen: torch.Generator, history: list) -> tuple[int, int]:
        """Load the state into the run; (step, first epoch to run)."""
        try:
            state = torch.load(self.path(STATE), map_location="cpu", weights_only=True)
        except Exception as e:
            raise TrainError(
                f"cannot resume from {self.path(STATE)} ({str(e).splitlines()[0][:100]}): "
                "delete the folder or choose another -o"
            ) from None
        old = {k: v for k, v in state["config"].items() if k not in _IGNORED}
        new = {k: v for k, v in self.config.items() if k not in _IGNORED}
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if "model" in diff and "model" in old:
            raise TrainError(
                f"{self.folder} holds a run of another model ({old['model']} then, {new.get('model')} now): "
                "resume with the same model, or choose another -o"
            )
        if diff:
            shown = ", ".join(f"{k}: {old.get(k)!r} then, {new.get(k)!r} now" for k in diff[:3])
            raise TrainError(
                f"{self.folder} holds a run with other options ({shown}): resume with the same "
                "options, or choose another -o"
            )
        try:
            model.load_state_dict(state["model"])
            masks.set(state["masks"])
            opt.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:150]
            raise TrainError(f"{self.folder} holds a run of another model ({first}): choose another -o") from None
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        history[:] = json.loads(state["history"])
        return int(state["step"]), int(state["epoch"]) + 1
