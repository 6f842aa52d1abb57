"""examples/corenet in small: a base network trained through `connectome sweep`, the CoreNet grid at one
budget with every method, the guarantee and the effective sparsity recorded, and the report."""
import importlib.util
import json
import os

from connectome.sweep import Spec, run_sweep

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "corenet")


def test_the_corenet_reproduction_in_small(tmp_path):
    spec = Spec.load(os.path.join(ROOT, "base.toml"))
    assert len(spec.points()) == 4
    spec.runs.update(model="connectome:lenet_300_100", data="mnist", epochs=1, limit=3000, val_size=500)
    rows = run_sweep(spec, str(tmp_path / "base"), local=True)
    assert [r["status"] for r in rows] == ["ok"]
    found = importlib.util.spec_from_file_location("reproduce", os.path.join(ROOT, "reproduce.py"))
    mod = importlib.util.module_from_spec(found)
    found.loader.exec_module(mod)
    results = mod.run(str(tmp_path / "base"), str(tmp_path / "r.json"), seeds=1, size=64, keeps=(0.15,),
                      bound=(0.1, 1e4))
    assert json.loads((tmp_path / "r.json").read_text()) == results
    points = {e["method"]: e for e in results.values() if e["method"] not in ("dense", "bound")}
    assert set(points) == set(mod.METHODS)
    bound = {e["epsilon"]: e for e in results.values() if e["method"] == "bound"}
    assert bound[0.1]["size"] == 197 and bound[0.1]["share"] > 0.99 and bound[0.1]["within"] >= 0.95
    assert bound[1e4]["share"] <= bound[0.1]["share"]
    assert points["corenet"]["error"] < points["uniform"]["error"]   # importance sampling beats uniform
    assert points["corenet"]["kept"] == int(0.15 * 266200) and points["corenet"]["effective"] >= 0.85
    assert 0 <= points["corenet"]["within_1"] <= 1
    mod.report(results, str(tmp_path / "doc"), keeps=(0.15,))
    assert (tmp_path / "doc" / "table.md").read_text().count("| lenet_300_100 / mnist |") == len(mod.METHODS)
    assert os.path.getsize(tmp_path / "doc" / "error.png") > 10_000
    assert (tmp_path / "doc" / "bound.md").read_text().count("| lenet_300_100 / mnist | 197 |") == 2
