"""What a traced graph uses whole or reads: modules no rule knows, and the modules and parameters that
input-dependent computation uses (the analysis calls a weight used only by constant computations
ineffective, and one used by an op it cannot see into, effective).

Example: ``referenced(trace(model, input_shape=(1, 3)))`` (see :func:`referenced`).
"""

from __future__ import annotations

from .trace import Traced

__all__ = ["opaque_modules", "referenced"]


def opaque_modules(traced: Traced) -> list[str]:
    """Modules with parameters that the graph calls whole and that no rule knows."""
    from .lower.base import find_rule

    found = []
    for n in traced.graph.nodes:
        if (
            n.op == "call_module"
            and find_rule(traced, n)[1] is None
            and any(True for _ in traced.module(n).parameters())
        ):
            found.append(str(n.target))
    return found


def referenced(traced: Traced) -> set[str]:
    """Modules and parameters that input-dependent computation uses (a constant branch does not count)."""
    dep = traced.depends_on_input()

    refs = set(traced.opaque_weights)  # computed weights we could not see through
    for n in traced.graph.nodes:
        if n.op == "call_module" and dep[n]:
            refs.add(str(n.target))
        elif (n.op == "get_attr" or n in traced.param_nodes) and any(dep[u] for u in n.users):
            name = traced.attr_name(n)
            assert name is not None  # a get_attr or parameter node always has a name
            refs.add(name)
    return refs
