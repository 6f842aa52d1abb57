"""Model folders in every stored format connectome reads (bf16, fp16, fp32, fp8; compressed-tensors 0.14's
sparse-bitmask and sparse-24-bitmask in both key layouts), and the ones it refuses, each in one line."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import save_file

pytest.importorskip("transformers")
from connectome.hf.audit import audit_folder  # noqa: E402
from connectome.hf.analyze import analyze_folder  # noqa: E402
from connectome_cli.main import main  # noqa: E402

from .families import build, save, to_2_4  # noqa: E402


def compressed_tensors():
    try:
        import compressed_tensors
    except ImportError:
        if os.environ.get("CONNECTOME_STRICT_TOOLS"):
            pytest.fail("compressed-tensors 0.14 is not installed, but `make test` should have installed it")
        pytest.skip("compressed-tensors is not installed")
    return compressed_tensors


def _shards(folder):
    return sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))


def _rewrite(folder, change):
    """Rewrite every shard through ``change(key, tensor) -> {key: tensor}``."""
    for shard in _shards(folder):
        path = os.path.join(folder, shard)
        with safe_open(path, framework="pt") as f:
            meta = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        out = {}
        for k, t in tensors.items():
            out.update(change(k, t))
        save_file(out, path, metadata=meta)


def _stored(folder):
    out = {}
    for shard in _shards(folder):
        with safe_open(os.path.join(folder, shard), framework="pt") as f:
            out.update({k: f.get_tensor(k) for k in f.keys()})
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_dense_dtypes_give_the_stored_zeros(tmp_path, dtype):
    model, _ = build("llama")
    with torch.no_grad():
        model.model.layers[0].mlp.up_proj.weight[0, :5] = -0.0  # negative zeros are zeros
    save(model.to(dtype), str(tmp_path))
    res, loaded = analyze_folder(str(tmp_path), progress=False)
    stored = _stored(str(tmp_path))
    for name, mask in loaded.masks.items():
        assert torch.equal(mask, stored[name].float() != 0), name
    assert not loaded.masks["model.layers.0.mlp.up_proj.weight"][0, :5].any()


@pytest.mark.parametrize("fp8", ["float8_e4m3fn", "float8_e5m2"])
def test_fp8_weights_are_read_by_their_bits(tmp_path, fp8):
    model, _ = build("qwen2")
    save(model, str(tmp_path))
    kind = getattr(torch, fp8)
    _rewrite(str(tmp_path), lambda k, t: {k: t.to(kind) if t.dim() == 2 else t})
    res, loaded = analyze_folder(str(tmp_path), progress=False)
    stored = _stored(str(tmp_path))
    assert stored["model.layers.0.mlp.up_proj.weight"].dtype == kind
    for name, mask in loaded.masks.items():
        assert torch.equal(mask, stored[name].float() != 0), name
    assert res.params_nonzero < res.params_total


def test_nan_weights_fail_the_audit(tmp_path):
    model, _ = build("llama")
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[3, 3] = float("nan")
        model.model.layers[1].mlp.down_proj.weight[4, 4] = float("inf")
    save(model.to(torch.bfloat16), str(tmp_path))
    rep = audit_folder(str(tmp_path), margin=False, progress=False)
    bad = [f for f in rep.findings if f.code == "nonfinite"]
    assert [f.message for f in bad] == ["model.layers.1.mlp.down_proj.weight: 2 NaN/Inf value(s)"]
    assert rep.failed == ["nonfinite"]


def _compress(tmp_path, structure: str, old_layout: bool):
    compressed_tensors()
    from compressed_tensors.compressors import ModelCompressor
    from compressed_tensors.config import BitmaskConfig, Sparse24BitMaskConfig

    model, _ = build("llama")
    if structure == "2:4":
        with torch.no_grad():
            for n, w in model.named_parameters():
                if w.dim() == 2 and "embed" not in n and "lm_head" not in n:
                    to_2_4(w)
    dense = tmp_path / "dense"
    save(model, str(dense))
    params = list(model.parameters())
    zeros = 100 * sum(int((p == 0).sum()) for p in params) / sum(p.numel() for p in params)
    kw = dict(targets=["Linear"], ignore=["lm_head"], global_sparsity=zeros)
    cfg = BitmaskConfig(**kw) if structure == "unstructured" else Sparse24BitMaskConfig(sparsity_structure="2:4", **kw)
    comp = ModelCompressor(sparsity_config=cfg)
    state = comp.compress(model)
    if old_layout:  # earlier versions kept ".weight" in the prefix
        state = {k.replace("_proj.", "_proj.weight.") if not k.endswith(".weight") else k: v for k, v in state.items()}
    folder = tmp_path / "compressed"
    folder.mkdir()
    shutil.copy(dense / "config.json", folder / "config.json")
    keys = sorted(state)
    half = len(keys) // 2  # two shards with an index, as save_pretrained writes them
    index = {"metadata": {}, "weight_map": {}}
    for i, part in enumerate((keys[:half], keys[half:])):
        name = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({k: state[k].contiguous() for k in part}, str(folder / name), metadata={"format": "pt"})
        index["weight_map"].update({k: name for k in part})
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    comp.update_config(str(folder))
    return str(dense), str(folder)


@pytest.mark.parametrize("structure", ["unstructured", "2:4"])
@pytest.mark.parametrize("old_layout", [False, True])
def test_compressed_tensors_sparse_formats_decode_to_the_dense_masks(tmp_path, structure, old_layout):
    dense, folder = _compress(tmp_path, structure, old_layout)
    config = json.load(open(os.path.join(folder, "config.json")))
    fmt = config["quantization_config"]["sparsity_config"]["format"]
    assert fmt == ("sparse-bitmask" if structure == "unstructured" else "sparse-24-bitmask")
    assert any(k.endswith(".bitmask") for k in _stored(folder))
    ref, ref_loaded = analyze_folder(dense, progress=False)
    rep = audit_folder(folder, margin=False, progress=False)
    for name, mask in ref_loaded.masks.items():
        assert torch.equal(rep.analysis.masks[name], mask), name
        assert torch.equal(rep.analysis.effective_masks[name], ref.effective_masks[name]), name
    from connectome.hf.folder import Folder
    from connectome.hf.stream import Reader

    opened = Folder.open(folder)
    reader = Reader(opened, {})
    stored = _stored(dense)
    assert len(opened.compressed) == 14
    for name in opened.compressed:  # the values too, not only where they are
        assert torch.equal(reader.tensor(name), stored[name]), name
    claims = rep.sections["sparsity_config"]
    assert claims["format"] == fmt and claims["targeted_layers"] == 14
    codes = {f.code for f in rep.findings}
    assert "config-global-sparsity" in codes and rep.passed
    if structure == "2:4":
        assert "config-structure" in codes


def test_a_wrong_global_sparsity_claim_fails(tmp_path):
    dense, folder = _compress(tmp_path, "unstructured", False)
    path = os.path.join(folder, "config.json")
    config = json.load(open(path))
    config["quantization_config"]["sparsity_config"]["global_sparsity"] = 70.0
    json.dump(config, open(path, "w"))
    r = CliRunner().invoke(main, ["audit", folder, "--no-margin"])
    assert r.exit_code == 1, r.output
    assert "config.json claims global sparsity 70.00%" in r.output


def _one_line_exit_2(args, *needles):
    r = CliRunner().invoke(main, [str(a) for a in args])
    assert r.exit_code == 2, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.output, r.output
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def folder(tmp_path):
    model, _ = build("mistral")
    save(model, str(tmp_path / "m"))
    return tmp_path / "m"


def test_a_truncated_shard_is_one_line(folder):
    shard = folder / _shards(str(folder))[1]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 100])
    _one_line_exit_2(["audit", folder], shard.name, "truncated", "download it again")


def test_a_missing_shard_is_one_line(folder):
    shard = folder / _shards(str(folder))[-1]
    shard.unlink()
    _one_line_exit_2(["analyze", folder], shard.name, "model.safetensors.index.json", "missing")


def test_an_unknown_architecture_is_one_line(folder):
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "not-a-model-type"
    (folder / "config.json").write_text(json.dumps(config))
    _one_line_exit_2(["audit", folder], "not-a-model-type", "transformers")


@pytest.mark.parametrize(
    "quant, needle",
    [({"quant_method": "gptq", "bits": 4}, "gptq-quantized"),
     ({"quant_method": "compressed-tensors", "format": "pack-quantized"}, "pack-quantized")],
)
def test_an_undecodable_format_is_one_line(folder, quant, needle):
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = quant
    (folder / "config.json").write_text(json.dumps(config))
    _one_line_exit_2(["audit", folder], needle, "cannot read their zeros")


def test_a_packed_tensor_that_does_not_fit_the_config_is_one_line(folder):
    _rewrite(str(folder), lambda k, t: {k: t} if "down_proj" not in k else {k: t.to(torch.int32)[:, :4] * 0})
    first = _one_line_exit_2(["audit", folder])
    assert "down_proj" in first and "config" in first


def test_a_hub_id_is_found_in_the_local_cache_only(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    _one_line_exit_2(["audit", "some-org/some-model"], "huggingface-cli download some-org/some-model")
    snap = tmp_path / "hub" / "models--some-org--some-model" / "snapshots" / "abc123"
    shutil.copytree(folder, snap)
    r = CliRunner().invoke(main, ["analyze", "some-org/some-model"])
    assert r.exit_code == 0, r.output
    assert "model.layers.1" in r.output and "dead heads" in r.output
