"""``connectome rules``: what the lowering registry knows."""

from __future__ import annotations

import click

from connectome.graph.lower import RULES
from connectome.graph.lower.base import key_name

from .main import main


@main.command()
@click.option("--grep", default=None, help="Only rules whose op name contains this text.")
def rules(grep: str | None) -> None:
    """List every op with a lowering rule, and the rule that handles it.

    Ops without a rule are analysed as all-to-all (sound but loose) and listed in the
    report's unsupported_ops.
    """
    rows = sorted((key_name(k), f"{fn.__module__.rsplit('.', 1)[-1]}.{fn.__name__}") for k, fn in RULES.items())
    for op, fn in rows:
        if grep is None or grep.lower() in op.lower():
            click.echo(f"{op:<60} {fn}")
