"""Local MNIST, FashionMNIST and CIFAR-10: the original order and layout, the right shapes, clear errors."""
import gzip
import pickle

import numpy as np
import pytest
import torch

from connectome import data


def test_mnist_test_split_is_the_original_in_order():
    x, y = data.load("mnist", "test")
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.float32
    assert y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.05


def test_fashion_mnist_from_the_debian_package():
    x, y = data.load("fashion-mnist", "test")
    assert x.shape == (10000, 1, 28, 28) and y[:5].tolist() == [9, 2, 1, 1, 6]


def test_batches_are_seeded_samples():
    a, ya = data.batch("mnist", 32, seed=1)
    b, yb = data.batch("mnist", 32, seed=1)
    c, _ = data.batch("mnist", 32, seed=2)
    assert torch.equal(a, b) and torch.equal(ya, yb) and not torch.equal(a, c)


def test_idx_files_in_a_root_folder(tmp_path):
    images = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(b"\x00\x00\x08\x03" + (3).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + images.tobytes())
    with open(tmp_path / "t10k-labels-idx1-ubyte", "wb") as f:
        f.write(b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + bytes([4, 5, 6]))
    x, y = data.load("fashion-mnist", "test", root=str(tmp_path))
    assert y.tolist() == [4, 5, 6]
    assert torch.allclose(x[1, 0] * 0.3530 + 0.2860, torch.from_numpy(images[1]).float() / 255, atol=1e-6)


def test_errors_name_the_fix(tmp_path):
    with pytest.raises(data.DataError, match="unknown dataset .imagenet."):
        data.batch("imagenet")
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big") + b"\x00" * 8)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big"))
    with pytest.raises(data.DataError, match="truncated"):
        data.load("fashion-mnist", "test", root=str(tmp_path))


def _cifar_arrays(n_per_batch=3, seed=0):
    rng = np.random.default_rng(seed)
    return {b: (rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8), rng.integers(0, 10, n_per_batch))
            for b in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]}


def _write_python_batches(folder, arrays, bytes_keys=False):
    folder.mkdir(parents=True, exist_ok=True)
    for name, (pixels, labels) in arrays.items():
        key = (lambda k: k.encode()) if bytes_keys else (lambda k: k)
        entry = {key("batch_label"): name, key("data"): pixels, key("labels"): [int(v) for v in labels],
                 key("filenames"): [f"{i}.png" for i in range(len(labels))]}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))


def test_cifar10_python_batches_follow_the_documented_layout(tmp_path):
    arrays = _cifar_arrays()
    _write_python_batches(tmp_path / "cifar-10-batches-py", arrays, bytes_keys=True)
    x, y = data.load("cifar10", "train", root=str(tmp_path))
    assert x.shape == (15, 3, 32, 32) and x.dtype == torch.float32
    assert y.tolist() == [int(v) for b in range(1, 6) for v in arrays[f"data_batch_{b}"][1]]
    pixels = arrays["data_batch_2"][0]
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    for c, h, w in [(0, 0, 1), (0, 1, 0), (1, 0, 0), (2, 31, 31), (1, 17, 5)]:
        # the red plane, then green, then blue, each 32 rows of 32 pixels
        want = pixels[1, c * 1024 + h * 32 + w] / 255
        assert abs(float(x[4, c, h, w]) * std[c] + mean[c] - want) < 1e-5


def test_cifar10_binary_batches_equal_the_python_ones(tmp_path):
    arrays = _cifar_arrays(seed=1)
    _write_python_batches(tmp_path / "py", arrays)
    binary = tmp_path / "bin" / "cifar-10-batches-bin"
    binary.mkdir(parents=True)
    for name, (pixels, labels) in arrays.items():
        records = np.concatenate([labels.astype(np.uint8)[:, None], pixels], axis=1)
        (binary / f"{name}.bin").write_bytes(records.tobytes())
    for split in ("train", "test"):
        a, ya = data.load("cifar10", split, root=str(tmp_path / "py"))
        b, yb = data.load("cifar10", split, root=str(tmp_path / "bin"))
        assert torch.equal(a, b) and torch.equal(ya, yb)
    x, y = data.batch("cifar10", 4, seed=3, root=str(tmp_path / "bin"))
    assert x.shape == (4, 3, 32, 32) and len(set(y.tolist())) >= 1


class _Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_a_cifar10_pickle_cannot_run_code(tmp_path):
    arrays = _cifar_arrays()
    _write_python_batches(tmp_path, arrays)
    victim = tmp_path / "created-by-the-pickle"
    (tmp_path / "test_batch").write_bytes(pickle.dumps({"data": _Payload(str(victim)), "labels": []}))
    with pytest.raises(data.DataError, match=r"test_batch asks to build io\.open"):
        data.load("cifar10", "test", root=str(tmp_path))
    assert not victim.exists()
    (tmp_path / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(data.DataError, match="is not a CIFAR-10 python batch"):
        data.load("cifar10", "test", root=str(tmp_path))


def test_cifar10_missing_names_the_fix(tmp_path):
    with pytest.raises(data.DataError, match="cifar10 files not found: unpack cifar-10-python.tar.gz"):
        data.batch("cifar10", 4, root=str(tmp_path))
