"""The package layout (DESIGN.md, "Layout"): no import cycles between modules, lazy imports included, and
the engine (``connectome.graph``) and loading (``connectome.io``) never import a product."""
from __future__ import annotations

import ast
import pathlib

import networkx as nx
import pytest

import connectome

ROOT = pathlib.Path(connectome.__file__).parent
PRODUCTS = ("connectome.analysis", "connectome.audit", "connectome.margin", "connectome.report",
            "connectome.render", "connectome.prune")


def _module(path: pathlib.Path) -> str:
    parts = ["connectome", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> nx.DiGraph:
    """Every module -> every connectome module it imports, at any depth of its code."""
    mods = {_module(p): p for p in ROOT.rglob("*.py")}
    g = nx.DiGraph()
    g.add_nodes_from(mods)
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and getattr(block.test, "id", None) == "TYPE_CHECKING" for n in ast.walk(block)}
        for node in ast.walk(tree):
            if id(node) in typing_only:     # annotations only: never run
                continue
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for t in targets:
                # `from . import x` names a module when x is one; else the package itself is imported
                hit = t if t in mods else None
                if hit and hit != name and not (path.name == "__init__.py" and hit.startswith(name + ".")):
                    g.add_edge(name, hit)
    return g


def test_no_import_cycles():
    # a package's __init__ importing its own submodules is how re-exports work, not a cycle
    cycles = list(nx.simple_cycles(_imports()))
    assert cycles == [], "import cycles: " + "; ".join(" -> ".join(c + c[:1]) for c in cycles[:5])


def test_engine_and_loading_never_import_a_product():
    g = _imports()
    bad = [(a, b) for a, b in g.edges if a.startswith(("connectome.graph", "connectome.io"))
           and b.startswith(PRODUCTS)]
    assert bad == []


def test_public_names_are_re_exported():
    for name in ("analyze", "Analysis", "Analyzer", "trace", "lower", "walk", "load", "MaskSource", "Status"):
        assert hasattr(connectome, name), name
    from connectome.graph import lower, trace, walk  # noqa: F401
    from connectome.io import Checkpoint, MaskSource, SpecError  # noqa: F401


@pytest.mark.parametrize(
    "module", ["connectome.io.masks", "connectome.graph.names", "connectome.hf.stream", "connectome.layerrow"]
)
def test_a_module_imported_first_imports(module):
    """The packages import their names on first use: no module may rely on another's import order."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
