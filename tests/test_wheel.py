"""The package as a user installs it: the wheel built from this checkout, installed into a fresh virtual
environment, and its ``connectome`` command run from a folder outside the checkout.

Packages are discovered (pyproject.toml), so the wheel must hold every module under ``connectome/`` and
``cli/`` (as ``connectome_cli``) and no other top-level package (no ``cli``, no ``tests``). The fresh
environment borrows the heavy dependencies (torch, numpy, scipy, ...) from this one through a ``.pth``
file rather than reinstalling them; a plain path line in a ``.pth`` does not run the editable-install
hook that lives there, so the checkout's own ``connectome`` stays out of reach.
"""
from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import torch

from connectome_cli.main import main

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"connectome": "connectome", "connectome_cli": "cli"}     # import name -> folder in the checkout
TIMEOUT = 300


def _run(args: list, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=TIMEOUT)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Builds the wheel from a copy of the sources: an in-tree build would write build/ into the checkout,
    and setuptools packs whatever a stale build/lib still holds (modules since moved or deleted)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src)
    shutil.copy(ROOT / config["project"]["readme"], src)
    folders = set(PACKAGES.values()) | set(config["tool"]["setuptools"].get("package-dir", {}).values())
    for folder in folders:
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    # no build isolation: the build must not need the network; --check-build-dependencies names a
    # setuptools that is too old (pyproject's build-system; `pip install -e '.[test]'` brings one)
    p = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--check-build-dependencies",
              "--disable-pip-version-check", "-q", "-w", tmp / "dist", src], cwd=tmp)
    assert p.returncode == 0, p.stdout + p.stderr
    (built,) = (tmp / "dist").glob("connectome-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment outside the checkout with the wheel installed; returns its bin folder."""
    home = tmp_path_factory.mktemp("venv")
    env_dir = home / "env"
    p = _run([sys.executable, "-m", "venv", "--without-pip", env_dir], cwd=home)
    assert p.returncode == 0, p.stderr
    bindir = env_dir / "bin"
    python = bindir / "python"
    p = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=home)
    target = Path(p.stdout.strip())
    ours = site.getsitepackages() + ([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])
    (target / "_borrowed_dependencies.pth").write_text("".join(f"{d}\n" for d in ours if os.path.isdir(d)))
    # this environment's pip, run for the fresh one's interpreter (the fresh one needs no pip of its own)
    p = _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
              "--disable-pip-version-check", "-q", wheel], cwd=home)
    assert p.returncode == 0, p.stdout + p.stderr
    return bindir


def _env(bindir: Path) -> dict:
    """The environment of a user who activated the fresh venv: nothing from the checkout on the path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["VIRTUAL_ENV"] = str(bindir.parent)
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture()
def elsewhere(tmp_path) -> Path:
    """A working folder outside the checkout (pytest's tmp_path lies outside it unless --basetemp says else)."""
    assert ROOT not in tmp_path.resolve().parents
    return tmp_path


def test_wheel_holds_every_module_and_no_other_package(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = next(z.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
        scripts = next(z.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    src = wheel.parent.parent / "src"     # the copy the wheel was built from: a snapshot of the checkout
    expected = {f"{pkg}/{f.relative_to(src / folder).as_posix()}"
                for pkg, folder in PACKAGES.items() for f in (src / folder).rglob("*.py")}
    shipped = {n for n in names if n.endswith(".py")}
    assert shipped == expected, (f"missing from the wheel: {sorted(expected - shipped)}; "
                                 f"unexpected: {sorted(shipped - expected)}")
    subpackages = {d.relative_to(src).as_posix() for d in (src / "connectome").rglob("*")
                   if (d / "__init__.py").exists()}
    assert {f"{d}/__init__.py" for d in subpackages} <= shipped and len(subpackages) >= 5
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == set(PACKAGES), f"top-level entries in the wheel: {sorted(top)}"
    assert "connectome = connectome_cli.entry:run" in scripts
    for extra in ("zoo", "docs", "test"):
        assert f"Provides-Extra: {extra}" in meta


# One interpreter in the fresh environment answers everything that needs no separate process: where the
# imports come from, and each command's --help through the installed console-script entry point (every
# process imports torch, which takes seconds).
PROBE = """
import importlib.util, json
from importlib.metadata import entry_points
from click.testing import CliRunner
import connectome, connectome_cli, torch
(script,) = entry_points(group="console_scripts", name="connectome")
run = script.load()  # the script's entry: it starts the early read, then runs the command group
from connectome_cli.main import main
assert run.__module__ == "connectome_cli.entry" and callable(run)
helps = {name: CliRunner().invoke(main, [name, "--help"], prog_name="connectome") for name in sorted(main.commands)}
print(json.dumps({"files": {"connectome": connectome.__file__, "connectome_cli": connectome_cli.__file__,
                            "torch": torch.__file__},
                  "cli": getattr(importlib.util.find_spec("cli"), "origin", None),
                  "helps": {name: [r.exit_code, r.output] for name, r in helps.items()}}))
"""


@pytest.fixture(scope="module")
def probe(venv, tmp_path_factory) -> dict:
    p = _run([venv / "python", "-c", PROBE], cwd=tmp_path_factory.mktemp("probe"), env=_env(venv))
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_imports_come_from_the_wheel(venv, probe):
    files = probe["files"]
    for name in ("connectome", "connectome_cli"):
        assert Path(files[name]).resolve().is_relative_to(venv.parent.resolve()), files
    assert Path(files["torch"]).resolve() == Path(torch.__file__).resolve()    # borrowed, not reinstalled
    assert probe["cli"] is None or not Path(probe["cli"]).resolve().is_relative_to(ROOT), probe["cli"]


def test_every_command_has_help(venv, probe, elsewhere):
    p = _run([venv / "connectome", "--help"], cwd=elsewhere, env=_env(venv))     # the script itself
    assert p.returncode == 0 and p.stdout.startswith("Usage: connectome"), p.stdout + p.stderr
    assert sorted(probe["helps"]) == sorted(main.commands)     # every command module shipped
    for name, (code, text) in probe["helps"].items():
        assert code == 0 and text.startswith(f"Usage: connectome {name}"), f"connectome {name} --help: {text}"
        assert name in p.stdout


def test_prune_then_analyze(venv, elsewhere):
    exe, env = venv / "connectome", _env(venv)
    out = elsewhere / "lenet.pt"
    p = _run([exe, "prune", "connectome:lenet_300_100", "--method", "random", "--sparsity", "0.98", "-o", out],
             cwd=elsewhere, env=env)
    assert p.returncode == 0, p.stderr
    assert out.is_file() and "effective sparsity" in p.stdout, p.stdout
    state = torch.load(out, weights_only=True)
    assert any(k.endswith("weight_mask") for k in state)
    p = _run([exe, "analyze", "connectome:lenet_300_100", "--weights", out], cwd=elsewhere, env=env)
    assert p.returncode == 0, p.stderr
    assert "Effective sp." in p.stdout and "effective sparsity" in p.stdout.lower(), p.stdout
