"""The streamed audit of a model folder against ``connectome.analyze`` on the fully loaded model, on six
families with planted dead units and 2:4 layers (tests/hf/families.py)."""
from __future__ import annotations

import json
import os

import pytest
import torch

pytest.importorskip("transformers")
import connectome  # noqa: E402
from connectome.hf.audit import audit_folder  # noqa: E402
from connectome.hf.analyze import analyze_folder  # noqa: E402

from .families import build, configs, save  # noqa: E402

FAMILIES = list(configs())


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    out = {}
    for family in FAMILIES:
        model, planted = build(family)
        path = str(tmp_path_factory.mktemp(family))
        save(model, path)
        out[family] = (path, planted)
    return out


def _once(compute):
    """A per-family cache: module fixtures share what is costly to compute."""
    cache: dict = {}

    def get(family):
        if family not in cache:
            cache[family] = compute(family)
        return cache[family]

    return get


@pytest.fixture(scope="module")
def refs(folders):
    """family -> connectome.analyze of the fully loaded model."""
    return _once(lambda f: connectome.analyze(_loaded(folders[f][0]), input_shape=(1, 8), input_dtype=torch.long))


@pytest.fixture(scope="module")
def eager(folders):
    """family -> the audit of its folder with every mask kept."""
    return _once(lambda f: audit_folder(folders[f][0], margin=False, progress=False, lazy=False))


def _loaded(path):
    import transformers
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    return transformers.AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()


@pytest.mark.parametrize("family", FAMILIES)
def test_the_streamed_audit_equals_the_analysis_of_the_loaded_model(folders, refs, eager, family):
    path, planted = folders[family]
    shards = [f for f in os.listdir(path) if f.endswith(".safetensors")]
    assert len(shards) >= 2, "the folder must be sharded for this test to mean anything"
    ref = refs(family)
    res = eager(family).analysis
    assert [(r["name"], r["numel"], r["nonzero"], r["effective"], r["dead_in"], r["dead_out"]) for r in res.layers] == [
        (r["name"], r["numel"], r["nonzero"], r["effective"], r["dead_in"], r["dead_out"]) for r in ref.layers
    ]
    assert res.effective_masks.keys() == ref.effective_masks.keys()
    for name, mask in ref.effective_masks.items():
        assert torch.equal(res.effective_masks[name], mask), name
    assert res.collapsed == ref.collapsed is False
    assert res.params_effective < res.params_nonzero  # the plants make nonzero weights ineffective


@pytest.mark.parametrize("family", FAMILIES)
def test_the_audit_finds_exactly_the_planted_dead_units(folders, eager, family):
    path, planted = folders[family]
    blocks = eager(family).sections["blocks"]
    assert len(blocks) == 2
    for b in blocks:
        i = b["index"]
        assert set(b["dead_heads"]) == planted.dead_heads.get(i, set()), (family, i)
        assert b["dead_neurons"] == len(planted.dead_neurons.get(i, set())), (family, i)
        assert set(b["dead_experts"]) == planted.dead_experts.get(i, set()), (family, i)
        assert b["heads"] == 4
    if family == "mixtral":
        assert blocks[0]["experts"] == 4


def _groups_by_hand(w: torch.Tensor, axis: int) -> tuple[int, int]:
    """(groups of 4, groups keeping more than 2) by a loop over the groups."""
    rows = (w != 0).movedim(axis, -1).reshape(-1, w.shape[axis]).tolist()
    groups = bad = 0
    for row in rows:
        for start in range(0, len(row), 4):
            groups += 1
            bad += sum(row[start : start + 4]) > 2
    return groups, bad


@pytest.mark.parametrize("family", ["llama", "gpt2", "mixtral"])
def test_n_m_structure_is_measured_exactly(folders, family):
    path, planted = folders[family]
    model = _loaded(path)
    params = dict(model.named_parameters())
    rep = audit_folder(path, margin=False, progress=False, claim_structure="2:4")
    table = rep.sections["structure"]
    for name, row in table.items():
        axis = 0 if family == "gpt2" and name.endswith(("c_fc.weight", "c_proj.weight", "c_attn.weight")) else -1
        groups, bad = _groups_by_hand(params[name].detach(), axis)
        assert (row["groups_of_4"], row["violations_2_4"]) == (groups, bad), name
    for name in planted.two_four:
        assert table[name]["violations_2_4"] == 0 and table[name]["share_2_4"] == 1.0
    failing = {f.layer for f in rep.findings if f.code == "claim-structure"}
    expected = {n.rpartition(".")[0] for n, r in table.items() if r["violations_2_4"] and not r["dense_by_convention"]}
    assert failing == expected and not rep.passed and rep.failed == ["claim"]
    dense = {n for n, r in table.items() if r["dense_by_convention"]}
    assert any("embed" in n or "wte" in n for n in dense)
    assert not any(n in planted.two_four for n in dense)


def test_a_2_4_model_passes_its_structure_claim(tmp_path):
    from .families import to_2_4

    model, _ = build("qwen2", seed=1)
    with torch.no_grad():
        for name, w in model.named_parameters():
            if w.dim() == 2 and "embed" not in name and "lm_head" not in name:
                to_2_4(w)
    save(model, str(tmp_path))
    rep = audit_folder(str(tmp_path), margin=False, progress=False, claim_structure="2:4")
    assert rep.passed, [f.message for f in rep.findings if f.severity == "error"]
    assert any(f.code == "claim-structure-met" for f in rep.findings)
    strict = audit_folder(str(tmp_path), margin=False, progress=False, claim_structure="2:4", structure_all=True)
    assert {f.layer for f in strict.findings if f.code == "claim-structure"} == {"model.embed_tokens", "lm_head"}


def test_masks_out_streams_the_effective_masks(folders, tmp_path):
    from click.testing import CliRunner
    from safetensors.torch import load_file

    from connectome_cli.main import main

    path, _ = folders["llama"]
    out = tmp_path / "eff.safetensors"
    r = CliRunner().invoke(main, ["audit", path, "--masks-out", str(out), "--format", "json", "--no-margin"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert [b["name"] for b in report["blocks"]] == ["model.layers.0", "model.layers.1"]
    saved = load_file(str(out))
    res, _ = analyze_folder(path, progress=False)
    assert saved.keys() == res.effective_masks.keys()
    assert all(torch.equal(saved[k], res.effective_masks[k]) for k in saved)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_lazy_analysis_keeps_no_mask_and_gives_the_same_result(folders, refs, eager, family):
    from connectome.hf.proxy import effective_mask
    from connectome.hf.stream import load_folder

    path, planted = folders[family]
    ref = refs(family)
    loaded = load_folder(path, progress=False, keep_masks=False)
    assert loaded.masks == {} and loaded.summaries
    rep = audit_folder(path, progress=False, loaded=loaded)
    res = rep.analysis
    assert [(r["name"], r["nonzero"], r["effective"], r["dead_in"], r["dead_out"]) for r in res.layers] == [
        (r["name"], r["nonzero"], r["effective"], r["dead_in"], r["dead_out"]) for r in ref.layers
    ]
    assert rep.sections["blocks"] == eager(family).sections["blocks"]
    assert rep.sections["structure"] == eager(family).sections["structure"]
    for name, mask in ref.effective_masks.items():
        assert torch.equal(effective_mask(res, loaded, loaded.exact, name), mask), name
    if family in ("llama", "mistral", "qwen2", "gemma2"):  # only the layers around the plants are read again
        assert 0 < len(loaded.exact) <= len(loaded.summaries) // 2, sorted(loaded.exact)
        # and walked again alone: the walk on stand-ins already gave every status (checked, not assumed)
        assert any("redone only where they are" in n for n in rep.notes), rep.notes


def test_lazy_masks_out_equal_the_eager_ones(folders, tmp_path):
    from click.testing import CliRunner
    from safetensors.torch import load_file

    from connectome.hf import folder as hf_folder
    from connectome_cli.main import main

    path, _ = folders["qwen2"]
    old = hf_folder.LAZY_LIMIT
    out = {}
    for limit in (0, old):  # 0: every folder is "big", read lazily
        hf_folder.LAZY_LIMIT = limit
        try:
            f = tmp_path / f"eff{limit}.safetensors"
            r = CliRunner().invoke(main, ["audit", path, "--masks-out", str(f), "--no-margin"])
            assert r.exit_code == 0, r.output
            out[limit] = load_file(str(f))
        finally:
            hf_folder.LAZY_LIMIT = old
    assert out[0].keys() == out[old].keys()
    assert all(torch.equal(out[0][k], out[old][k]) for k in out[0])


def test_every_report_format_carries_the_block_table(folders, tmp_path):
    from click.testing import CliRunner

    from connectome_cli.main import main

    path, _ = folders["gemma2"]
    runner = CliRunner()
    text = runner.invoke(main, ["audit", path, "--no-margin"])
    assert text.exit_code == 0 and "dead heads" in text.output and "model.layers.1" in text.output
    md = runner.invoke(main, ["audit", path, "--no-margin", "--format", "markdown"])
    assert "| block | params | direct sp. |" in md.output and "| `model.layers.1` |" in md.output
    page = tmp_path / "a.html"
    html = runner.invoke(main, ["audit", path, "--no-margin", "--format", "html", "-o", str(page)])
    if html.exit_code == 2 and "dot" in html.output:
        pytest.skip("graphviz's dot is not installed")
    assert html.exit_code == 0, html.output
    assert "<h2>Blocks</h2>" in page.read_text()


def _walked_ahead(path, waiting):
    """A lazy load of ``path`` whose first walk ran as if the matrices ``waiting(summaries)`` picks were
    still being counted (stand-ins for them, checked after the read), as the audit of a big folder does."""
    from connectome.hf.proxy import OnesSource, walk_ahead
    from connectome.hf.stitch import StackAnalyzer
    from connectome.hf.stream import Summary, load_folder

    def trace(model):
        an = StackAnalyzer(model, input_shape=(1, 8), input_dtype=torch.long)
        an.prelower(OnesSource(model, an.names))
        return an

    loaded = load_folder(path, progress=False, keep_masks=False, during=trace)
    full, late = loaded.summaries, set(waiting(loaded.summaries))
    if not late:
        return loaded, late
    loaded.summaries = {k: v for k, v in full.items() if k not in late}
    loaded.walked = walk_ahead(loaded, loaded.made, lambda k: (Summary.whole(full[k].shape), False) if k in late else None)
    loaded.summaries = full  # the read is over
    return loaded, late


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("late", ["second half", "planted", "wholly kept"])
def test_a_walk_done_while_the_last_matrices_were_read_gives_the_same_result(folders, refs, family, late):
    from connectome.hf.proxy import effective_mask

    path, _ = folders[family]
    ref = refs(family)

    def waiting(summaries):
        names = list(summaries)
        if late == "second half":
            return names[len(names) // 2 :]
        alive = [k for k, s in summaries.items() if len(s.shape) == 2 and s.rows.all() and s.cols.all()]
        return [k for k in names if (k in alive) == (late == "wholly kept")]

    def whole_walks(loaded):  # walks after the read, whole or redone in part
        an, runs = loaded.made, []
        real_run, real_rerun = an.run, an.rerun
        an.run = lambda *a, **k: runs.append("run") or real_run(*a, **k)
        an.rerun = lambda *a, **k: runs.append("rerun") or real_rerun(*a, **k)
        return audit_folder(path, progress=False, loaded=loaded), runs

    loaded, stood_in = _walked_ahead(path, waiting)
    rep, runs = whole_walks(loaded)
    res = rep.analysis
    assert [(r["name"], r["nonzero"], r["effective"], r["dead_in"], r["dead_out"]) for r in res.layers] == [
        (r["name"], r["nonzero"], r["effective"], r["dead_in"], r["dead_out"]) for r in ref.layers
    ]
    for name, mask in ref.effective_masks.items():
        assert torch.equal(effective_mask(res, loaded, loaded.exact, name), mask), name
    if late == "wholly kept":  # every stand-in was the matrix's proxy: the first walk stood
        _, before = whole_walks(_walked_ahead(path, lambda summaries: [])[0])  # no walk ahead: the first is one
        assert len(runs) == len(before) - 1, stood_in


def test_the_audit_walks_while_the_last_matrices_are_counted(folders, refs, monkeypatch):
    import threading

    from connectome.hf import audit as hf_audit
    from connectome.hf import firstpass
    from connectome.hf.folder import Folder

    path, _ = folders["llama"]
    f = Folder.open(path)
    keys = firstpass.counted_early(f)
    late = {(f.entries[k].shard, f.entries[k].start) for k in keys[len(keys) // 2 :]}
    gate, real_count, real_walk, seen = threading.Event(), firstpass.count_stored, hf_audit.walk_ahead, []

    def count(root, entry, buf, shard=None):  # the second half is counted only once the walk is done
        if (entry.shard, entry.start) in late:
            assert gate.wait(120)
        return real_count(root, entry, buf, shard)

    def walk(loaded, analyzer, peek):
        try:
            done = real_walk(loaded, analyzer, peek)
            seen.append(set(done[0].assumed))
            return done
        finally:
            gate.set()

    monkeypatch.setattr(firstpass, "count_stored", count)
    monkeypatch.setattr(hf_audit, "walk_ahead", walk)
    rep = audit_folder(path, progress=False, lazy=True, margin=False)
    assert len(seen) == 1 and seen[0]  # it walked once, with stand-ins
    ref = refs("llama")
    assert [(r["name"], r["nonzero"], r["effective"], r["dead_in"], r["dead_out"]) for r in rep.analysis.layers] == [
        (r["name"], r["nonzero"], r["effective"], r["dead_in"], r["dead_out"]) for r in ref.layers
    ]
