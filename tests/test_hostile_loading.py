"""Hostile files and specs: each is refused in one line, before it can cost more than its size. Files are
written small, here, by the real APIs (torch.save, zipfile, safetensors), then patched; nothing is mocked.
Memory bombs are shown refused before allocation by the growth of the process's peak memory."""

import contextlib
import copy
import io
import json
import os
import pathlib
import signal
import socket
import struct
import zipfile

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from connectome import memory
from connectome.io.checkpoint import load
from connectome.io.masks import MaskSource
from connectome.io.spec import SpecError, load_model, parse_shape
from connectome.io.tensors import _load_error, read_tensors
from connectome.models import lenet_300_100
from connectome_cli.main import main

ARCH = ["--arch", "connectome:lenet_300_100"]
QUIET = ["--no-margin", "--fail-on", "none"]
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # quantized and sparse tensors warn that they are beta


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_ok(r):
    assert r.exit_code == 0, r.output


def lenet(path, **kw):
    return load(str(path), arch="connectome:lenet_300_100", **kw)


def assert_one_line_error(r, *fragments):
    assert r.exit_code == 2 and "Traceback" not in r.output, (r.exit_code, r.output)
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and len(err[0]) < 400, r.stderr
    assert all(f in err[0] for f in fragments), (fragments, err[0])


@contextlib.contextmanager
def no_allocation(field="VmHWM", mb=256):
    """The block raises the process's peak (resident, or virtual with VmPeak) by less than ``mb``."""
    lines = lambda: pathlib.Path("/proc/self/status").read_text().splitlines()  # noqa: E731
    peak = lambda: next(int(x.split()[1]) for x in lines() if x.startswith(field))  # noqa: E731
    before = peak()
    yield
    assert peak() - before < mb * 1024, (field, peak() - before)


@contextlib.contextmanager
def deadline(seconds=5):
    """A call that blocks (opening a FIFO to read it) fails the test instead of hanging it."""
    old = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("blocked: a FIFO was opened for reading"))
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0), signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def sd():
    torch.manual_seed(0)
    return lenet_300_100().state_dict()


def save(path, obj, **kw):
    torch.save(obj, path, **kw)
    return path


def drop(sd, key="1.weight"):
    return {k: v for k, v in sd.items() if k != key}


# 1. memory bombs ---------------------------------------------------------------------------------
def test_expanded_prune_form_is_refused_and_shapes_are_checked_before_any_product(sd, tmp_path):
    orig, mask = torch.zeros(1).expand(50000, 50000), torch.ones(1).expand(50000, 50000)
    path = save(tmp_path / "bomb.pt", {**drop(sd), "1.weight_orig": orig, "1.weight_mask": mask})
    assert path.stat().st_size < 200_000
    with no_allocation(), pytest.raises(SpecError, match="expanded view that declares 2,500,000,000 elements"):
        lenet(path)
    assert_one_line_error(run("audit", path, *ARCH), "expanded view", "re-save it with .contiguous()")
    orig, mask = torch.zeros(1).expand(3000, 3000), torch.ones(1).expand(3000, 3000)  # 36 MB: under the bound
    small = {**drop(sd), "1.weight_orig": orig, "1.weight_mask": mask}
    with no_allocation(mb=30), pytest.raises(SpecError, match=r"1.weight: file \(3000, 3000\) vs model"):
        lenet(save(tmp_path / "s.pt", small))
    small["1.weight_orig"] = torch.ones(300, 784)
    with pytest.raises(SpecError, match=r"1.weight_mask: file \(3000, 3000\) vs model \(300, 784\)"):
        lenet(save(tmp_path / "m.pt", small))
    ck = lenet(save(tmp_path / "ok.pt", {**sd, "1.weight": torch.zeros(1).expand(300, 784)}))  # small: read through
    assert not ck.model[1].weight.any() and ck.model[1].weight.stride() == (784, 1)


def test_expanded_views_given_as_masks_in_models_and_in_trusted_pickles(tmp_path):
    m = lenet_300_100()
    with no_allocation(), pytest.raises(SpecError, match="the masks given: 1.weight is an expanded view"):
        load(arch=m, masks={"1.weight": torch.ones(1).expand(100000, 100000)})
    with pytest.raises(ValueError, match="shape"):  # the engine's own entry point compares shapes first
        MaskSource(m, {"1.weight": torch.ones(1).expand(100000, 100000)})
    big = nn.Sequential(nn.Linear(2, 2))
    big[0].weight = nn.Parameter(torch.zeros(1).expand(100000, 100000))
    with no_allocation(), pytest.raises(SpecError, match="Sequential: 0.weight is an expanded view"):
        load(arch=big)
    path = save(tmp_path / "whole.pt", big)
    with no_allocation(), pytest.raises(SpecError, match="holds an expanded view that declares 10,000,000,000"):
        load(str(path), trust=True)
    with pytest.raises(SpecError, match="expanded view"):
        load_model(str(path), trust=True)
    assert_one_line_error(run("audit", path, "--trust"), "expanded view")


def _patched_zip(method, file_size: int, compress_size: int | None = None) -> bytes:
    """A small zip whose record declares other sizes, in its local header and in the central directory."""
    with zipfile.ZipFile(buf := io.BytesIO(), "w", method) as z:
        z.writestr("archive/data/0", bytes(4096))
    out = bytearray(buf.getvalue())
    for at in (
        out.index(b"PK\x03\x04") + 18,
        out.index(b"PK\x01\x02") + 20,
    ):  # compressed size, then uncompressed size, 4 bytes each
        if compress_size is not None:
            out[at : at + 4] = struct.pack("<I", compress_size)
        out[at + 4 : at + 8] = struct.pack("<I", file_size)
    return bytes(out)


def test_zip_records_declaring_more_than_they_can_hold_or_than_the_budget(sd, tmp_path):
    deflated = tmp_path / "deflated.pt"
    deflated.write_bytes(_patched_zip(zipfile.ZIP_DEFLATED, 2**31))
    bomb = r"declares 2.0 GB for record 'archive/data/0' in a .* file: a zip bomb or a corrupt file; re-save it"
    with no_allocation(), pytest.raises(SpecError, match=bomb):  # not the CRC check: nothing was read
        read_tensors(str(deflated))
    assert_one_line_error(run("audit", deflated, *ARCH), "zip bomb")
    stored = tmp_path / "stored.pt"
    stored.write_bytes(_patched_zip(zipfile.ZIP_STORED, 2**31))
    with pytest.raises(SpecError, match="stored uncompressed but declares 2,147,483,648 bytes in 4,096"):
        read_tensors(str(stored))
    stored.write_bytes(_patched_zip(zipfile.ZIP_STORED, 2**31, 2**31))
    with no_allocation(), pytest.raises(SpecError, match=bomb):
        read_tensors(str(stored))
    assert_one_line_error(run("audit", stored, *ARCH), "zip bomb")
    plain = save(tmp_path / "plain.pt", sd)
    rezipped = tmp_path / "deflated.pt"
    with zipfile.ZipFile(plain) as zin, zipfile.ZipFile(rezipped, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename))
    got, _ = read_tensors(str(rezipped))
    assert all(torch.equal(got[k], sd[k]) for k in sd)
    with memory.budget(2**17), pytest.raises(memory.MemoryBudgetError, match="loading .*deflated.pt needs"):
        read_tensors(str(rezipped))


def _legacy(obj, numels: dict[int, int]) -> bytes:
    """A legacy (non-zip) file whose pickle declares other storage sizes: {saved numel: declared numel}."""
    torch.save(obj, buf := io.BytesIO(), _use_new_zipfile_serialization=False)
    data = buf.getvalue()
    for old, new in numels.items():  # the first occurrence is the storage's: its size tuple comes after
        op = b"M" + struct.pack("<H", old) if old < 2**16 else b"J" + struct.pack("<i", old)
        assert op in data
        data = data.replace(op, b"J" + struct.pack("<i", new), 1)
    return data


def test_legacy_files_declaring_storages_larger_than_the_file(sd, tmp_path):
    """Unguarded, torch.load reserves every declared storage (30 x 8 GB here) before reading any data."""
    many = {f"w{i}": torch.zeros(3000 + i) for i in range(30)}
    path = tmp_path / "legacy.pt"
    path.write_bytes(_legacy(many, {3000 + i: 2**31 - 1 for i in range(30)}))
    with (
        no_allocation("VmPeak", 1024),
        pytest.raises(SpecError, match="declares 240.0 GB of tensor data in a .*hostile"),
    ):
        read_tensors(str(path))
    assert_one_line_error(run("audit", path, *ARCH), "of tensor data in a")
    good = save(tmp_path / "good.pt", sd, _use_new_zipfile_serialization=False)
    got, fmt = read_tensors(str(good))
    assert fmt == "torch (legacy)" and all(torch.equal(got[k], sd[k]) for k in sd)
    view = save(tmp_path / "view.pt", {"w": torch.zeros(1).expand(10**5, 10**5)}, _use_new_zipfile_serialization=False)
    with no_allocation(), pytest.raises(SpecError, match="expanded view that declares 10,000,000,000 elements"):
        read_tensors(str(view))


def test_safetensors_headers_declaring_huge_tensors(tmp_path):
    def write(name, header, length=None):
        text = json.dumps(header).encode()
        (tmp_path / name).write_bytes(struct.pack("<Q", length or len(text)) + text + bytes(8))
        return tmp_path / name

    huge = {"w": {"dtype": "F32", "shape": [100000, 100000], "data_offsets": [0, 40_000_000_000]}}
    lying = {"w": {"dtype": "F32", "shape": [100000, 100000], "data_offsets": [0, 8]}}
    for path in (write("a.safetensors", huge), write("b.safetensors", lying), write("c.safetensors", lying, 2**60)):
        with no_allocation(), pytest.raises(SpecError, match="not a readable safetensors file"):
            read_tensors(str(path))
        assert_one_line_error(run("audit", path, *ARCH), "safetensors")


# 2. tensor kinds ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pruned(sd):
    return sd["1.weight"] * (torch.arange(784) % 3 != 0)


def test_meta_and_complex_tensors_are_refused_but_a_models_complex_buffers(sd, tmp_path):
    path = save(tmp_path / "meta.pt", {**sd, "1.weight": torch.zeros(300, 784, device="meta")})
    with pytest.raises(SpecError, match="holds meta tensors, which have no data .1.weight.: save the weights after"):
        lenet(path)
    assert_one_line_error(run("audit", path, *ARCH), "meta tensors")
    masks = save(tmp_path / "metamask.pt", {"1.weight": torch.ones(300, 784, device="meta")})
    assert_one_line_error(run("audit", save(tmp_path / "w.pt", sd), *ARCH, "--masks", masks), "meta tensors")
    path = save(tmp_path / "c.pt", {**sd, "1.weight": torch.zeros(300, 784, dtype=torch.complex64)})
    with pytest.raises(SpecError, match="complex weights are not supported: .* holds 1.weight as torch.complex64"):
        lenet(path)
    assert_one_line_error(run("audit", path, *ARCH), "complex weights are not supported")
    masks = save(tmp_path / "cm.pt", {"1.weight": torch.ones(300, 784, dtype=torch.complex64)})
    r = run("audit", save(tmp_path / "w.pt", sd), *ARCH, "--masks", masks)
    assert_one_line_error(r, "complex weights are not supported")
    rotary = nn.Sequential(nn.Linear(4, 2))  # a rotary embedding's complex table is a buffer, loaded as it is
    rotary.register_buffer("freqs", torch.polar(torch.ones(4), torch.arange(4.0)))
    ck = load(str(save(tmp_path / "r.pt", rotary.state_dict())), arch=copy.deepcopy(rotary))
    assert torch.equal(ck.model.freqs, rotary.freqs)


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_sparse_weights_and_masks_become_dense_after_their_shape_matched(sd, pruned, tmp_path, layout):
    sparse = (lambda t: t.to_sparse()) if layout == "coo" else (lambda t: t.to_sparse_csr())
    ck = lenet(save(tmp_path / "s.pt", {**sd, "1.weight": sparse(pruned)}))
    assert torch.equal(ck.model[1].weight, pruned) and "converted 1 sparse tensor(s) to dense" in ck.notes
    assert_ok(run("audit", tmp_path / "s.pt", *ARCH, *QUIET))
    mask = (pruned != 0).float()
    form = {**drop(sd), "1.weight_orig": sd["1.weight"], "1.weight_mask": sparse(mask)}
    ck = lenet(save(tmp_path / "p.pt", form))
    assert torch.equal(ck.model[1].weight, sd["1.weight"] * mask) and torch.equal(ck.masks["1.weight"], pruned != 0)
    masks = save(tmp_path / "mask.pt", {"1.weight": sparse(mask)})
    ck = lenet(save(tmp_path / "w.pt", sd), masks=str(masks))
    assert torch.equal(ck.masks["1.weight"], mask.bool() & (sd["1.weight"] != 0))
    assert_ok(run("audit", tmp_path / "w.pt", *ARCH, "--masks", masks, *QUIET))
    huge = torch.sparse_coo_tensor(torch.tensor([[0], [0]]), torch.tensor([1.0]), (10**9, 10**9))
    with no_allocation(), pytest.raises(SpecError, match=r"1.weight: file \(1000000000, 1000000000\) vs model"):
        lenet(save(tmp_path / "huge.pt", {**sd, "1.weight": huge}))
    assert_one_line_error(run("audit", tmp_path / "huge.pt", *ARCH), "shape mismatches")


def test_quantized_tensors_are_dequantized_with_their_zeros_kept(sd, pruned, tmp_path):
    q = torch.quantize_per_tensor(pruned, 0.01, 5, torch.qint8)
    ck = lenet(save(tmp_path / "q.pt", {**sd, "1.weight": q}))
    assert torch.equal(ck.model[1].weight, q.dequantize()) and "dequantized 1 quantized tensor(s)" in ck.notes
    assert torch.equal(ck.model[1].weight != 0, q.int_repr() != 5)
    assert_ok(run("audit", tmp_path / "q.pt", *ARCH, *QUIET))
    qmask = torch.quantize_per_tensor((pruned != 0).float(), 1.0, 0, torch.quint8)
    ck = lenet(save(tmp_path / "w.pt", sd), masks=str(save(tmp_path / "qmask.pt", {"1.weight": qmask})))
    assert torch.equal(ck.masks["1.weight"], (pruned != 0) & (sd["1.weight"] != 0))
    # a zero scale makes entries away from the zero point dequantize to zero: the mask would change
    ints, scales = torch.full((300, 784), 3, dtype=torch.int8), torch.ones(300, dtype=torch.double)
    ints[0, 0], scales[0] = 9, 0.0
    bad = torch._make_per_channel_quantized_tensor(ints, scales, torch.full((300,), 3), 0)
    path = save(tmp_path / "bad.pt", {**sd, "1.weight": bad})
    with pytest.raises(SpecError, match="dequantize to zero away from its zero point"):
        lenet(path)
    assert_one_line_error(run("audit", path, *ARCH), "zero point")
    badm = save(tmp_path / "badm.pt", {"1.weight": bad})
    assert_one_line_error(run("audit", tmp_path / "w.pt", *ARCH, "--masks", badm), "zero point")


def test_models_with_complex_or_meta_parameters_are_refused(tmp_path):
    nets = "def complex_net(): return nn.Linear(4, 2, dtype=torch.cfloat)\n"
    (tmp_path / "m.py").write_text(
        "import torch\nfrom torch import nn\n" + nets + "def meta_net(): return nn.Linear(4, 2, device='meta')\n"
    )
    for name, fragment in (("complex_net", "complex weights are not supported"), ("meta_net", "meta parameters")):
        with pytest.raises(SpecError, match=fragment):
            load(arch=f"{tmp_path}/m.py:{name}")
        assert_one_line_error(run("audit", "--arch", f"{tmp_path}/m.py:{name}", "--input-shape", "1,4"), fragment)


def test_mask_source_refuses_and_converts_explicit_masks():
    m = nn.Sequential(nn.Linear(3, 2))
    assert torch.equal(MaskSource(m, {"0.weight": torch.eye(2, 3).to_sparse()})["0.weight"], torch.eye(2, 3).bool())
    with pytest.raises(ValueError, match="is a complex tensor"):
        MaskSource(m, {"0.weight": torch.ones(2, 3, dtype=torch.complex64)})
    with pytest.raises(ValueError, match="shape"), no_allocation():
        MaskSource(m, {"0.weight": torch.sparse_coo_tensor(torch.zeros(2, 1, dtype=torch.long), [1.0], (10**6, 10**6))})


# 3. messages -------------------------------------------------------------------------------------
def test_fifos_devices_and_sockets_are_not_regular_files(sd, tmp_path):
    fifo = tmp_path / "f.pt"
    os.mkfifo(fifo)
    with deadline():
        with pytest.raises(SpecError, match="is not a regular file: it is a FIFO"):
            read_tensors(str(fifo))
        assert_one_line_error(run("audit", fifo, *ARCH), "is not a regular file")
        weights = save(tmp_path / "w.pt", sd)
        assert_one_line_error(run("audit", weights, *ARCH, "--masks", fifo), "is not a regular file")
        assert_one_line_error(run("audit", "--arch", fifo), "is not a regular file")
    assert_one_line_error(run("audit", "/dev/urandom", *ARCH), "is not a regular file: it is a character device")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "s.pt"))
        assert_one_line_error(run("audit", tmp_path / "s.pt", *ARCH), "is not a regular file: it is a socket")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_an_unreadable_file_names_the_path_and_the_fix(sd, tmp_path):
    path = save(tmp_path / "locked.pt", sd)
    path.chmod(0)
    assert_one_line_error(run("audit", path, *ARCH), "cannot read", "locked.pt", "chmod")


def test_huge_and_unprintable_key_names_make_short_one_line_messages(sd, tmp_path):
    long = save(tmp_path / "long.pt", {**sd, "k" * 10**6: torch.zeros(1), "a\nb\x1b[31m": torch.zeros(1)})
    with pytest.raises(SpecError, match="2 unexpected") as e:
        lenet(long)
    assert len(str(e.value)) < 400 and "\n" not in str(e.value) and "\x1b" not in str(e.value)
    assert_one_line_error(run("audit", long, *ARCH), "unexpected")
    many = save(tmp_path / "many.pt", {f"layer{i}." + "x" * 300: torch.zeros(1) for i in range(500)})
    assert_one_line_error(run("audit", many, *ARCH), "500 unexpected", "6 missing")
    masks = save(tmp_path / "masks.pt", {"m" * 10**6: torch.ones(1)})
    assert_one_line_error(run("audit", save(tmp_path / "w.pt", sd), *ARCH, "--masks", masks), "mask file names 1")
    deep = tmp_path / ("d" * 200) / ("e" * 200) / "nope.pt"  # a long path keeps its tail
    assert_one_line_error(run("audit", deep, *ARCH), "no such checkpoint file: ...", "eee/nope.pt")


def test_what_torch_load_raises_is_one_line_naming_the_path():
    """MemoryError and OSError cannot be provoked in a small test without mocks: the formatter is checked."""
    assert str(_load_error("w.pt", 2**20, MemoryError())).startswith("not enough memory to load w.pt (1.0 MB")
    e = _load_error("w.pt", 10, OSError(5, "Input/output error"))
    assert str(e) == "cannot read w.pt: input/output error; check the disk or copy the file again"
    assert "[Errno" not in str(_load_error("w.pt", 10, PermissionError(13, "Permission denied")))
    alloc = RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: 4 TB")
    assert "not enough memory" in str(_load_error("w.pt", 10, alloc))


# 4. model specs ----------------------------------------------------------------------------------
SPECS = {  # source of m.py -> what the message says
    "x = 1\ny = 2\ndef build(:\n": "m.py: SyntaxError at line 3: ",
    "raise ValueError('no GPU here')\n": "m.py raised ValueError at import: no GPU here",
    "import nosuch_module_xyz\n": "m.py imports a module that is not installed: No module named 'nosuch_module_xyz'",
    "def build(a, b, c=1): pass\n": "m.py:build needs arguments (a, b): pass them with --arch-kwargs a=...,b=...",
    "def build():\n    raise ValueError('bad width')\n": "m.py:build raised ValueError: bad width",
}


@pytest.mark.parametrize("source", SPECS, ids=["syntax", "raises", "missing", "args", "factory"])
def test_broken_model_files(tmp_path, source):
    (tmp_path / "m.py").write_text(source)
    with pytest.raises(SpecError) as e:
        load_model(f"{tmp_path}/m.py:build")
    assert SPECS[source] in str(e.value), str(e.value)
    assert_one_line_error(run("audit", "--arch", f"{tmp_path}/m.py:build", "--input-shape", "1,4"), SPECS[source])


def test_exits_and_interrupts_from_user_code_pass_through(tmp_path):
    (tmp_path / "m.py").write_text("raise SystemExit(3)\n")
    with pytest.raises(SystemExit):
        load_model(f"{tmp_path}/m.py:build")
    (tmp_path / "k.py").write_text("def build():\n    raise KeyboardInterrupt\n")
    with pytest.raises(KeyboardInterrupt):
        load_model(f"{tmp_path}/k.py:build")


def test_a_path_with_a_colon_is_split_at_its_last_colon(tmp_path):
    folder = tmp_path / "a:b"
    folder.mkdir()
    (folder / "m.py").write_text("import torch\ndef build(): return torch.nn.Sequential(torch.nn.Linear(4, 2))\n")
    model, _ = load_model(f"{folder}/m.py:build")
    assert isinstance(model[0], nn.Linear)
    assert_ok(run("audit", "--arch", f"{folder}/m.py:build", "--input-shape", "1,4", *QUIET))


SHAPES = {"99999999999999999999,3": "more than 2**62 elements", "2147483648,2147483648,2": "more than 2**62 elements",
          "1,2,3,4,5,6,7,8,9": "9 dimensions, more than 8", "9" * 5000: "comma-separated integers"}  # fmt: skip


@pytest.mark.parametrize("text,fragment", SHAPES.items(), ids=["huge dim", "huge product", "9 dims", "5000 digits"])
def test_input_shapes_that_overflow(sd, tmp_path, text, fragment):
    with pytest.raises(SpecError, match=fragment.replace("*", r"\*")):
        parse_shape(text)
    assert_one_line_error(run("audit", save(tmp_path / "w.pt", sd), *ARCH, "--input-shape", text), fragment)


def test_a_model_nested_2000_deep_is_one_line(tmp_path):
    build = "def build():\n    m = torch.nn.Linear(4, 2)\n    for _ in range(2000): m = torch.nn.Sequential(m)\n"
    (tmp_path / "deep.py").write_text("import torch\n" + build + "    return m\n")
    with pytest.raises(SpecError, match="nests its modules 2000 deep, past Python's recursion limit"):
        load(arch=f"{tmp_path}/deep.py:build")
    assert_one_line_error(run("audit", "--arch", f"{tmp_path}/deep.py:build", "--input-shape", "1,4"), "nests")
