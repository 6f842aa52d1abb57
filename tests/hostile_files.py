"""Hostile data sets for the corpus of ``test_hostile.py``: made at test time, small on disk."""
from __future__ import annotations

import gzip
import os

from hostile import Case

SNIP = ["prune", "connectome:lenet_300_100", "--method", "snip", "--data", "mnist", "--sparsity", "0.9", "-o", "p.pt"]
NO_NETWORK = {v: "http://127.0.0.1:9" for v in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}


def _idx(path: str, dims: tuple[int, ...], body: int) -> None:
    """An IDX file of unsigned bytes declaring ``dims``, with ``body`` zero bytes after its header."""
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims))
        chunk = bytes(2**20)
        for _ in range(body // len(chunk)):
            f.write(chunk)
        f.write(bytes(body % len(chunk)))


def _mnist(d: str, images: tuple[int, ...], body: int) -> list[str]:
    root = os.path.join(d, "data")
    os.mkdir(root)
    _idx(os.path.join(root, "train-images-idx3-ubyte.gz"), images, body)
    _idx(os.path.join(root, "train-labels-idx1-ubyte.gz"), images[:1], images[0])
    return [*SNIP, "--data-root", "data"]


def _csv(d: str, text: str) -> list[str]:
    os.mkdir(os.path.join(d, "data"))
    with open(os.path.join(d, "data", "mnist_train.csv"), "w") as f:
        f.write(text)
    return [*SNIP, "--data-root", "data"]


def _fifo(d: str) -> list[str]:
    os.mkdir(os.path.join(d, "data"))
    os.mkfifo(os.path.join(d, "data", "mnist_train.csv"))
    return [*SNIP, "--data-root", "data"]


ROW = ",".join(["5"] + ["0"] * 784) + "\n"
CASES = [
    Case("gzip bomb under a small header", lambda d: _mnist(d, (10, 28, 28), 50 * 2**20),
            says="holds more data than its header declares", inputs=("data/train-images-idx3-ubyte.gz",)),
    Case("gzip header declaring 2.3 GB", lambda d: [*_mnist(d, (3_000_000, 28, 28), 2**20), "--max-memory", "1G"],
            says="over the memory budget", inputs=("data/train-images-idx3-ubyte.gz",)),
    Case("MNIST CSV with a word in it", lambda d: _csv(d, ROW + ROW.replace(",0,", ",abc,", 1)),
            says="line 2, value 2: 'abc' is not a pixel value", inputs=("data/mnist_train.csv",)),
    Case("MNIST CSV with a short line", lambda d: _csv(d, ROW + "5,0,0\n"), says="line 2: 3 values, expected 785",
            inputs=("data/mnist_train.csv",)),
    Case("--data-root that does not exist", lambda d: [*SNIP, "--data-root", "nowhere"],
            says="no such data folder: nowhere"),
    Case("--data-root without the files", lambda d: [*SNIP, "--data-root", "."], says="mnist files not found"),
    Case("a FIFO in place of the CSV", lambda d: _fifo(d), says="is a FIFO (named pipe), not a data file"),
    Case("--download without a network", lambda d: [*SNIP, "--data-root", ".", "--download"],
            says="could not download mnist (no network?): Connection refused; put the files", run={"env": NO_NETWORK}),
]


# checkpoints, mask files and model files -----------------------------------------------------------------
AUDIT = ["audit", "--arch", "connectome:lenet_300_100", "--no-margin"]


def _lenet_sd():
    import torch

    from connectome.models import lenet_300_100

    torch.manual_seed(0)
    return lenet_300_100().state_dict()


def _save(d: str, name: str, obj, **kw) -> str:
    import torch

    torch.save(obj, os.path.join(d, name), **kw)
    return name


def _expanded(d: str) -> list[str]:
    import torch

    sd = _lenet_sd()
    w = sd.pop("1.weight")
    sd["1.weight_orig"] = torch.zeros(1).expand(50000, 50000)  # 128 KB on disk, 10 GB as a product
    sd["1.weight_mask"] = torch.ones(1).expand(50000, 50000)
    del w
    return [*AUDIT[:1], _save(d, "ck.pt", sd), *AUDIT[1:]]


def _zip_bomb(d: str) -> list[str]:
    import zipfile

    from test_hostile_loading import _patched_zip

    with open(os.path.join(d, "ck.pt"), "wb") as f:
        f.write(_patched_zip(zipfile.ZIP_DEFLATED, 2**31))
    return [*AUDIT[:1], "ck.pt", *AUDIT[1:]]


def _legacy_bomb(d: str) -> list[str]:
    import torch

    from test_hostile_loading import _legacy

    many = {f"w{i}": torch.zeros(3000 + i) for i in range(30)}
    with open(os.path.join(d, "ck.pt"), "wb") as f:
        f.write(_legacy(many, {3000 + i: 2**31 - 1 for i in range(30)}))
    return [*AUDIT[:1], "ck.pt", *AUDIT[1:]]


def _kind(d: str, kind: str) -> list[str]:
    import warnings

    import torch

    warnings.filterwarnings("ignore", "torch.quantize_per_tensor", UserWarning)  # deprecated, still written

    sd = _lenet_sd()
    w = sd["1.weight"]
    sd["1.weight"] = {
        "meta": lambda: w.to("meta"),
        "complex": lambda: w.to(torch.complex64),
        "sparse": lambda: (w * (torch.rand_like(w) < 0.1)).to_sparse(),
        "quantized": lambda: torch.quantize_per_tensor(w, 0.01, 0, torch.qint8),
    }[kind]()
    return [*AUDIT[:1], _save(d, "ck.pt", sd), *AUDIT[1:], "--fail-on", "none"]


def _masks_kind(d: str, kind: str) -> list[str]:
    import torch

    sd = _lenet_sd()
    mask = (torch.rand(300, 784) < 0.5).float()
    masks = {"1.weight": mask.to("meta") if kind == "meta" else mask.to(torch.complex64)}
    return [*AUDIT[:1], _save(d, "ck.pt", sd), *AUDIT[1:], "--masks", _save(d, "m.pt", masks)]


def _long_key(d: str) -> list[str]:
    import torch

    sd = _lenet_sd()
    sd["k" * 2**20] = torch.zeros(1)
    return [*AUDIT[:1], _save(d, "ck.pt", sd), *AUDIT[1:]]


def _odd(d: str, kind: str) -> list[str]:
    if kind == "fifo":
        os.mkfifo(os.path.join(d, "ck.pt"))
        return [*AUDIT[:1], "ck.pt", *AUDIT[1:]]
    return [*AUDIT[:1], "/dev/urandom", *AUDIT[1:]]


def _spec(d: str, source: str, folder: str = "") -> list[str]:
    where = os.path.join(d, folder)
    os.makedirs(where, exist_ok=True)
    with open(os.path.join(where, "m.py"), "w") as f:
        f.write(source)
    return ["analyze", os.path.join(where, "m.py") + ":build"]


GOOD = "import torch\ndef build():\n    return torch.nn.Sequential(torch.nn.Linear(4, 2))\nbuild.input_shape = (1, 4)\n"
CASES += [
    Case("stride-0 views in weight_orig/weight_mask", _expanded, says="expanded view", inputs=("ck.pt",)),
    Case("zip record declaring 2 GiB", _zip_bomb, says="zip bomb", inputs=("ck.pt",)),
    Case("legacy file declaring 240 GB", _legacy_bomb, says="of tensor data in a", inputs=("ck.pt",)),
    Case("meta tensors", lambda d: _kind(d, "meta"), says="meta tensors, which have no data", inputs=("ck.pt",)),
    Case("complex weights", lambda d: _kind(d, "complex"), says="complex weights are not supported",
         inputs=("ck.pt",)),
    Case("sparse weights", lambda d: _kind(d, "sparse"), code=0, prints="note: converted 1 sparse tensor(s) to dense",
         stderr_lines=0, inputs=("ck.pt",)),
    Case("quantized weights", lambda d: _kind(d, "quantized"), code=0, prints="note: dequantized 1 quantized tensor(s)",
         stderr_lines=0, inputs=("ck.pt",)),
    Case("meta masks", lambda d: _masks_kind(d, "meta"), says="meta tensors", inputs=("ck.pt", "m.pt")),
    Case("complex masks", lambda d: _masks_kind(d, "complex"), says="complex", inputs=("ck.pt", "m.pt")),
    Case("a 1 MB key name", _long_key, says="unexpected", inputs=("ck.pt",)),
    Case("a FIFO as the checkpoint", lambda d: _odd(d, "fifo"), says="is not a regular file: it is a FIFO"),
    Case("/dev/urandom as the checkpoint", lambda d: _odd(d, "dev"), says="is not a regular file: it is a character",
         inputs=("/dev/urandom",)),
    Case("model file with a syntax error", lambda d: _spec(d, "def build(:\n"), says="SyntaxError at line 1",
         inputs=("m.py",)),
    Case("model file that raises", lambda d: _spec(d, "raise ValueError('no GPU here')\n"),
         says="raised ValueError at import: no GPU here", inputs=("m.py",)),
    Case("model file with a missing import", lambda d: _spec(d, "import nosuch_module_xyz\n"),
         says="imports a module that is not installed", inputs=("m.py",)),
    Case("factory that needs arguments", lambda d: _spec(d, "def build(a, b): pass\n"),
         says="needs arguments (a, b)", inputs=("m.py",)),
    Case("factory that raises", lambda d: _spec(d, "def build():\n    raise ValueError('bad width')\n"),
         says="raised ValueError: bad width", inputs=("m.py",)),
    Case("a colon in the model's path", lambda d: _spec(d, GOOD, "a:b"), code=0, stderr_lines=0,
         inputs=("a:b/m.py",)),
    Case("an input shape that overflows", lambda d: ["analyze", "connectome:lenet_300_100", "--input-shape",
                                                     "99999999999999999999,784"], says="more than 2**62 elements"),
]


def _unreadable(d: str, what: str) -> list[str]:
    ck = _save(d, "ck.pt", _lenet_sd())
    if what == "checkpoint":
        os.chmod(os.path.join(d, ck), 0)
        return [*AUDIT[:1], ck, *AUDIT[1:]]
    os.mkdir(os.path.join(d, "ro"), 0o555)
    return ["analyze", "connectome:lenet_300_100", "--html", "ro/r.html"]


CASES += [
    Case("an unreadable checkpoint (chmod 000)", lambda d: _unreadable(d, "checkpoint"),
         says="cannot read ck.pt: permission denied", run={"unprivileged": True}, inputs=("ck.pt",)),
    Case("an output folder without write permission", lambda d: _unreadable(d, "folder"),
         says="cannot write ro/r.html: Permission denied", run={"unprivileged": True}, inputs=("ck.pt",)),
    Case("a seed that overflows", lambda d: ["prune", "connectome:lenet_300_100", "--method", "random", "--sparsity",
                                             "0.5", "--seed", str(2**64), "-o", "p.pt"], says="'--seed'"),
    Case("audit CHECKPOINT -o /dev/null", lambda d: [*AUDIT[:1], _save(d, "ck.pt", _lenet_sd()), *AUDIT[1:], "-o",
                                                      os.devnull], code=(0, 1), says="wrote /dev/null",
         inputs=("ck.pt", os.devnull)),
]
