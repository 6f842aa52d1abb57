"""Local MNIST and FashionMNIST: the original order, the right shapes, clear errors."""
import gzip

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
    with pytest.raises(data.DataError, match="unknown dataset 'cifar10'"):
        data.batch("cifar10")
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big") + b"\x00" * 8)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big"))
    with pytest.raises(data.DataError, match="truncated"):
        data.load("fashion-mnist", "test", root=str(tmp_path))
