"""Hugging Face model folders on the command line: telling one from a checkpoint file, and auditing it."""

from __future__ import annotations

import os
import re

import click

from connectome.io.spec import SpecError, parse_shape

_FILES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".pkl")


def names_folder(spec: str) -> bool:
    """A directory, or an ``org/name`` hub id that is not a file here."""
    if os.path.isdir(spec):
        return True
    return not os.path.exists(spec) and re.fullmatch(r"[\w.-]+/[\w.-]+", spec) is not None and not spec.endswith(_FILES)


def folder_audit(
    spec,
    input_shape,
    claim_sparsity,
    max_dead,
    categories,
    claim_structure,
    structure_all,
    masks_out,
    margin,
    margin_budget,
    tracer,
):
    """The audit of a model folder; with ``masks_out``, its effective masks written tensor by tensor."""
    from connectome.hf.audit import audit_folder
    from connectome.hf.folder import resolve
    from connectome.hf.nm import parse_structure
    from connectome.io.files import check_writable

    from . import early

    early.stop()  # the audit reads the shards from here on (the early reads are in the page cache)

    path = resolve(spec)
    if masks_out:
        check_writable(masks_out, (path,))
    shape = None
    if input_shape:
        shapes = parse_shape(input_shape)
        if len(shapes) != 1 or len(shapes[0]) != 2:
            raise SpecError(f"--input-shape for a language model is batch,tokens (e.g. 1,8), got {input_shape!r}")
        shape = shapes[0]
    if claim_structure:
        try:
            parse_structure(claim_structure)
        except ValueError as e:
            raise SpecError(str(e)) from None
    rep = audit_folder(
        path,
        shape,
        claim_sparsity,
        max_dead,
        categories,
        claim_structure,
        structure_all,
        margin,
        margin_budget,
        tracer,
        masks_out=masks_out,
    )
    if masks_out:
        click.echo(f"wrote {masks_out}: effective masks of {len(rep.analysis.effective_masks)} tensors", err=True)
    return rep
