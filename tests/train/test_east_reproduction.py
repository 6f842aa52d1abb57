"""examples/east in small: two points of the grid (EAST and RigL at 99.9%) through `connectome sweep` on a
few hundred images, and the report's table and plot."""
import importlib.util
import os

from connectome.sweep import Spec, run_sweep

ROOT = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "east")


def test_the_east_reproduction_in_small(tmp_path):
    spec = Spec.load(os.path.join(ROOT, "east.toml"))
    assert len(spec.points()) == 17
    spec.runs.update(run=[{"method": "east", "sparsity": 0.999}, {"method": "rigl", "sparsity": 0.999}], epochs=1,
                     limit=448, val_size=64, cycle_epochs=0.4, phase_epochs=[[0.2, 0.6]], update_every=2)
    rows = run_sweep(spec, str(tmp_path / "runs"), local=True)
    assert [r["status"] for r in rows] == ["ok", "ok"], rows
    found = importlib.util.spec_from_file_location("report", os.path.join(ROOT, "report.py"))
    mod = importlib.util.module_from_spec(found)
    found.loader.exec_module(mod)
    loaded = mod.load(str(tmp_path / "runs"))
    text = mod.table(loaded)
    assert "| 99.9% | east |" in text and "| 99.9% | rigl |" in text
    east = next(r for r in loaded if r["method"] == "east")
    assert [x["step"] for x in east["log"] if x["event"] == "update"] == [2, 4]   # 6 steps, cycles of 2
    mod.plot(loaded, str(tmp_path / "effective.png"))
    assert os.path.getsize(tmp_path / "effective.png") > 10_000
