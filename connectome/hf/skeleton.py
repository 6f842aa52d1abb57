"""The model of a folder without its weight matrices: built from the config, parameters on ``meta``.

The walk reads matrices only through their masks, so they need no values: each becomes a one-element
tensor expanded to its shape (a few bytes, a real CPU tensor the tracer accepts). Vectors (norm
scales, biases) are read for real: the walk uses their zeros (a norm scale of 0 silences a channel),
and they are small. Buffers the model computes itself (rotary frequencies) are built as usual.

Examples
--------
>>> import torch
>>> with meta_parameters():
...     lin = torch.nn.Linear(4, 3)
>>> lin.weight.device.type, lin.weight.shape
('meta', torch.Size([3, 4]))
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import nn

from ..io.errors import SpecError
from ..io.tensors import clip, first_line

__all__ = ["meta_parameters", "build_model", "placeholder", "placeholders", "materialize"]


@contextlib.contextmanager
def meta_parameters() -> Iterator[None]:
    """Every parameter registered inside is made on the meta device (buffers are not)."""
    original = nn.Module.register_parameter

    def register(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        original(self, name, param)

    nn.Module.register_parameter = register  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = original  # type: ignore[method-assign]


def build_model(config: dict) -> nn.Module:
    """The causal LM (else the base model) of a config.json, with meta parameters, in eval mode."""
    try:
        import transformers
        from transformers.utils import logging as hf_logging
    except ImportError:
        raise SpecError("reading a model folder needs transformers: pip install 'connectome[hf]'") from None
    hf_logging.set_verbosity_error()
    kind = config.get("model_type")
    if not isinstance(kind, str):
        raise SpecError("config.json has no model_type: it is not a transformers model config")
    try:
        cfg = transformers.AutoConfig.for_model(**config)
    except Exception as e:
        raise SpecError(
            f"config.json names model_type {clip(kind)}, which transformers {transformers.__version__} does not know "
            f"({first_line(e, 80)}): upgrade transformers or give a supported model"
        ) from None
    cfg.use_cache = False
    if hasattr(cfg, "_attn_implementation"):
        cfg._attn_implementation = "eager"  # the attention the tracer sees op by op
    archs = [a for a in (config.get("architectures") or []) if isinstance(a, str)]
    classes = [getattr(transformers, a, None) for a in archs]
    with warnings.catch_warnings(), meta_parameters(), _no_init():
        warnings.simplefilter("ignore")
        for cls in classes:
            if cls is not None and hasattr(cls, "_from_config"):
                try:
                    return _tied(cls._from_config(cfg))
                except Exception:
                    pass
        for auto in (transformers.AutoModelForCausalLM, transformers.AutoModel):
            try:
                return _tied(auto.from_config(cfg))
            except Exception as e:
                error = e
    raise SpecError(f"transformers cannot build {clip(kind)} from config.json: {first_line(error, 100)}")


def _tied(model: nn.Module) -> nn.Module:
    """Ties the weights the config ties (skipping initialisation skips the tying too), in eval mode."""
    tie = getattr(model, "tie_weights", None)
    if callable(tie):
        tie()
    return model.eval()


def _no_init() -> contextlib.AbstractContextManager:
    """transformers' switch that skips weight initialisation (meta parameters have nothing to fill)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:
        try:
            from transformers.modeling_utils import no_init_weights  # type: ignore[no-redef,attr-defined]
        except ImportError:
            return contextlib.nullcontext()
    return no_init_weights()


def placeholder(shape: tuple[int, ...], dtype: torch.dtype) -> nn.Parameter:
    """A parameter of ``shape`` with one stored element: the walk reads its mask, never its values."""
    return nn.Parameter(torch.ones((), dtype=dtype).expand(shape), requires_grad=False)


def placeholders(model: nn.Module) -> nn.Module:
    """``model`` with every parameter a :func:`placeholder` (what a trace needs of it), returned.

    >>> placeholders(torch.nn.Linear(3, 2)).weight.untyped_storage().nbytes()
    4
    """
    materialize(model, lambda name, param: placeholder(tuple(param.shape), param.dtype))
    return model


def materialize(model: nn.Module, value: Callable[[str, nn.Parameter], torch.Tensor | None]) -> None:
    """Replace every meta parameter by ``value(name, param)``; tied parameters stay one tensor.

    ``value`` returns None for a name the folder does not store; a parameter none of whose names is
    stored is an error.
    """
    groups: dict[int, list[str]] = {}
    params: dict[int, nn.Parameter] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(name)
        params[id(param)] = param
    modules = dict(model.named_modules(remove_duplicate=False))
    missing = []
    for pid, names in groups.items():
        new = next((v for v in (value(n, params[pid]) for n in names) if v is not None), None)
        if new is None:
            missing.append(names[0])
            continue
        new = new if isinstance(new, nn.Parameter) else nn.Parameter(new, requires_grad=False)
        for name in names:
            mod_name, _, attr = name.rpartition(".")
            modules[mod_name]._parameters[attr] = new
    if missing:
        raise SpecError(
            f"the folder stores no tensor for {clip(missing[0])}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + ": the checkpoint is incomplete or is for another architecture"
        )
