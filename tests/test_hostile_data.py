"""Dataset readers against hostile files and environments (issue 14): gzip bombs, huge or malformed CSVs,
oversized CIFAR-10 batches, FIFOs and folders in a file's place, a --data-root that is wrong or empty, and a
download without a network. Every failure is one line naming the file (and the fix); memory stays bounded."""

import gzip
import os
import re
import signal
import stat
import tracemalloc

import pytest
from click.testing import CliRunner

from connectome import data, memory
from connectome.memory import MemoryBudgetError, parse_size
from connectome_cli.main import main

ROW = ",".join(["7"] + ["0"] * 784)  # a valid MNIST CSV line: label 7, black pixels


@pytest.fixture(autouse=True)
def _no_hang():
    """A reader that blocks (on a FIFO, say) fails its test instead of hanging the suite."""

    def _fail(*_):
        raise TimeoutError("the reader blocked")

    old = signal.signal(signal.SIGALRM, _fail)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _header(dims):
    return b"\x00\x00\x08" + bytes([len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)


def _idx(path, dims, body=b"", zeros=0):
    """An IDX file at ``path`` (gzip when it ends in .gz) with ``body`` and then ``zeros`` zero bytes."""
    with gzip.open(path, "wb", compresslevel=1) if str(path).endswith(".gz") else open(path, "wb") as f:
        f.write(_header(dims) + body)
        chunk = bytes(1 << 20)
        while zeros > 0:
            f.write(chunk[: min(zeros, len(chunk))])
            zeros -= len(chunk)


def _pair(folder, count=3, images=None, labels=None):
    """A valid test split of ``count`` examples in ``folder`` (images gzipped, labels plain)."""
    _idx(folder / "t10k-images-idx3-ubyte.gz", images or (count, 28, 28), bytes(count * 784))
    _idx(folder / "t10k-labels-idx1-ubyte", labels or (count,), bytes([1] * count))


def _peak(fn):
    """(what ``fn`` raised, the peak bytes Python and numpy allocated meanwhile)."""
    tracemalloc.start()
    try:
        fn()
    except Exception as e:
        raised = e
    else:
        raised = None
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return raised, peak


# -- bounded memory ------------------------------------------------------------------------------------


def test_a_gzip_bomb_behind_a_small_header_is_refused_after_one_chunk(tmp_path):
    _pair(tmp_path, 2)
    bomb = tmp_path / "t10k-images-idx3-ubyte.gz"
    _idx(bomb, (2, 28, 28), zeros=50 * 2**20)  # 50 MB of zeros behind a header that declares 2 images
    assert bomb.stat().st_size < 2**20
    raised, peak = _peak(lambda: data.load("mnist", "test", root=str(tmp_path)))
    assert isinstance(raised, data.DataError)
    assert str(raised) == f"{bomb} holds more data than its header declares: replace it with the original file"
    assert peak < 8 * 2**20


def test_a_header_that_declares_more_than_the_budget_is_refused_before_the_body(tmp_path):
    _idx(tmp_path / "t10k-labels-idx1-ubyte", (20000,), bytes(20000))
    bomb = tmp_path / "t10k-images-idx3-ubyte.gz"
    _idx(bomb, (20000, 28, 28), zeros=2**20)
    with memory.budget(parse_size("8M")):
        raised, peak = _peak(lambda: data.load("mnist", "test", root=str(tmp_path)))
    assert isinstance(raised, MemoryBudgetError) and len(str(raised).splitlines()) == 1
    assert re.match(rf"reading 20,000 images from {re.escape(str(bomb))} needs (about )?15\.\d MB", str(raised))
    assert "over the memory budget of 8.0 MB" in str(raised)
    assert peak < 4 * 2**20


@pytest.mark.parametrize(
    "images, labels, message",
    [
        ((3, 28), (3,), "{images} declares 2 dimensions, but an MNIST images file has 3: replace it"),
        ((3, 32, 32), (3,), "{images} declares images of 32x32 pixels, but MNIST and FashionMNIST images are 28x28"),
        ((3, 28, 28), (4,), "{images} declares 3 images but {labels} declares 4 labels: use the two files of one"),
        ((0, 28, 28), (0,), "{images} declares no images: replace it with the original images file"),
        ((3, 28, 28), (3, 1), "{labels} declares 2 dimensions, but an MNIST labels file has 1"),
    ],
)
def test_idx_headers_must_be_mnist_shaped(tmp_path, images, labels, message):
    _idx(tmp_path / "t10k-images-idx3-ubyte.gz", images, zeros=1000)
    _idx(tmp_path / "t10k-labels-idx1-ubyte", labels, bytes([1] * labels[0]))
    names = {"images": tmp_path / "t10k-images-idx3-ubyte.gz", "labels": tmp_path / "t10k-labels-idx1-ubyte"}
    with pytest.raises(data.DataError) as e:
        data.load("fashion-mnist", "test", root=str(tmp_path))
    assert message.format(**names) in str(e.value) and "\n" not in str(e.value)


def test_damaged_idx_files_are_one_line(tmp_path):
    _pair(tmp_path)
    labels = tmp_path / "t10k-labels-idx1-ubyte"
    labels.write_bytes(_header((3,)) + bytes([1, 12, 3]))
    with pytest.raises(data.DataError, match=r"t10k-labels-idx1-ubyte: label 12 of example 2 is not a class 0-9"):
        data.load("mnist", "test", root=str(tmp_path))
    labels.write_bytes(b"PK\x03\x04 not an idx file")
    with pytest.raises(data.DataError, match=r"t10k-labels-idx1-ubyte is not an IDX file of unsigned bytes"):
        data.load("mnist", "test", root=str(tmp_path))
    _pair(tmp_path)
    images = tmp_path / "t10k-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:-12])  # the gzip stream ends early
    with pytest.raises(data.DataError, match=r"^cannot read .*t10k-images-idx3-ubyte.gz \(Compressed file ended"):
        data.load("mnist", "test", root=str(tmp_path))
    images.unlink()
    with pytest.raises(data.DataError, match=r"holds .*t10k-labels-idx1-ubyte but no t10k-images-idx3-ubyte\[.gz\]"):
        data.load("mnist", "test", root=str(tmp_path))


def _csv(folder, text, split="test"):
    path = folder / f"mnist_{split}.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _row(col=None, text=""):
    fields = ROW.split(",")
    if col is not None:
        fields[col] = text
    return ",".join(fields)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "line 1: the file is empty; expected lines of a label and 784 pixel values"),
        ("label,1x1\n", "line 2: the file holds only a header line; expected lines of a label and 784 pixel values"),
        (f"{ROW}\n{_row(783, 'x')}\n", "line 2, value 784: 'x' is not a pixel value (a whole number 0-255)"),
        (f"{ROW}\n{_row(783, '12e3')}\n", "line 2, value 784: '12e3' is not a pixel value (a whole number 0-255)"),
        (f"label\n{ROW}\n7,{'0,' * 300}0\n", "line 3: 302 values, expected 785 (a label and 28x28 pixel values)"),
        (f"{ROW}\n{ROW}\n{_row(784, '256')}\n", "line 3, value 785: '256' is not a pixel value (a whole number 0-255)"),
        (f"{ROW}\n{_row(784, '-1')}\n", "line 2, value 785: '-1' is not a pixel value (a whole number 0-255)"),
        (f"{ROW}\n{_row(0, '12')}\n", "line 2, value 1: '12' is not a label (a whole number 0-9)"),
        (f"{ROW}\n{_row(784, '99999')}\n", "line 2, value 785: '99999' is not a pixel value (a whole number 0-255)"),
        (f"{ROW}\n{_row(1, '')}\n", "line 2, value 2: '' is not a pixel value (a whole number 0-255)"),
        (f"{ROW}\n\n{ROW}\n", "line 2: the line is blank; remove it"),
        (
            f"{ROW}\n" + "0," * 3_000_000 + "0\n",
            "line 2: longer than 16,384 bytes; expected 785 comma-separated values (a label and 28x28 pixel values)",
        ),
    ],
)
def test_a_malformed_csv_names_the_file_and_the_line(tmp_path, text, message):
    path = _csv(tmp_path, text)
    with pytest.raises(data.DataError) as e:
        data.load("mnist", "test", root=str(tmp_path))
    assert str(e.value) == f"{path}, {message}"


def test_a_batch_checks_the_form_of_the_lines_it_does_not_sample(tmp_path):
    path = _csv(tmp_path, f"{ROW}\n" * 40 + f"{ROW[:-2]}\n" + f"{ROW}\n" * 9)
    with pytest.raises(data.DataError) as e:
        data.batch("mnist", 1, split="test", root=str(tmp_path))
    assert str(e.value) == f"{path}, line 41: 784 values, expected 785 (a label and 28x28 pixel values)"


def test_a_csv_with_a_huge_line_count_stays_small(tmp_path):
    path = _csv(tmp_path, "1\n" * 3_000_000)  # 6 MB, three million lines: no list of them is built
    raised, peak = _peak(lambda: data.batch("mnist", 4, split="test", root=str(tmp_path)))
    assert str(raised) == f"{path}, line 1: 1 values, expected 785 (a label and 28x28 pixel values)"
    assert peak < 8 * 2**20


def test_a_csv_too_big_for_the_budget_is_refused_before_parsing(tmp_path):
    path = _csv(tmp_path, f"{ROW}\n" * 2000)
    with memory.budget(parse_size("4M")):
        with pytest.raises(
            MemoryBudgetError,
            match=rf"^reading 2,000 lines of {re.escape(str(path))} needs (about )?7\.\d MB, over the",
        ):
            data.load("mnist", "test", root=str(tmp_path))
        x, y = data.batch("mnist", 4, split="test", root=str(tmp_path))  # a small batch fits
    assert x.shape == (4, 1, 28, 28) and y.tolist() == [7] * 4


def test_a_csv_with_a_header_crlf_and_a_bom_reads_as_the_values(tmp_path):
    rows = [f"{k}," + ",".join(str((k * 7 + i) % 256) for i in range(784)) for k in range(5)]
    _csv(tmp_path, "\ufefflabel," + ",".join(f"p{i}" for i in range(784)) + "\r\n" + "\r\n".join(rows))
    x, y = data.load("mnist", "test", root=str(tmp_path))
    assert y.tolist() == [0, 1, 2, 3, 4]
    pixels = (x * 0.3081 + 0.1307) * 255
    assert round(float(pixels[3, 0, 0, 5])) == (3 * 7 + 5) % 256
    xb, yb = data.batch("mnist", 2, seed=4, split="test", root=str(tmp_path))
    assert xb.shape == (2, 1, 28, 28) and set(yb.tolist()) <= set(range(5))


def test_cifar10_sizes_are_checked_against_the_budget_before_reading(tmp_path):
    binary = tmp_path / "test_batch.bin"
    with open(binary, "wb") as f:
        f.truncate(3073 * 100_000)  # 293 MB, sparse: nothing is written, nothing may be read
    with memory.budget(parse_size("8M")):
        with pytest.raises(
            MemoryBudgetError, match=r"^reading 293\.1 MB of CIFAR-10 batches from .* needs (about )?8\d\d\.\d MB"
        ):
            data.load("cifar10", "test", root=str(tmp_path))
        binary.unlink()
        pickled = tmp_path / "cifar-10-batches-py" / "test_batch"
        pickled.parent.mkdir()
        with open(pickled, "wb") as f:
            f.truncate(300 * 2**20)
        with pytest.raises(MemoryBudgetError, match=r"^reading 300\.0 MB of CIFAR-10 batches from .*batches-py"):
            data.load("cifar10", "test", root=str(tmp_path))


def test_damaged_cifar10_batches_are_one_line(tmp_path):
    binary = tmp_path / "test_batch.bin"
    binary.write_bytes(bytes(3073 * 2 + 5))
    with pytest.raises(data.DataError, match=r"6151 bytes is not a whole number of 3073-byte records"):
        data.load("cifar10", "test", root=str(tmp_path))
    binary.write_bytes(bytes([3]) + bytes(3072) + bytes([200]) + bytes(3072))
    with pytest.raises(data.DataError, match=r"test_batch.bin: label 200 of example 2 is not a class 0-9"):
        data.load("cifar10", "test", root=str(tmp_path))
    for i in (1, 2, 3):
        (tmp_path / f"data_batch_{i}.bin").write_bytes(bytes(3073))
    with pytest.raises(data.DataError) as e:
        data.load("cifar10", "train", root=str(tmp_path))
    assert str(e.value) == (
        f"{tmp_path} holds part of the CIFAR-10 train split but not data_batch_4.bin, "
        "data_batch_5.bin: unpack the whole archive there"
    )


# -- unreadable files and folders ----------------------------------------------------------------------


def test_a_fifo_in_place_of_a_data_file_is_never_opened_for_a_blocking_read(tmp_path):
    os.mkfifo(tmp_path / "mnist_test.csv")
    with pytest.raises(data.DataError) as e:
        data.load("mnist", "test", root=str(tmp_path))
    assert str(e.value) == (
        f"{tmp_path / 'mnist_test.csv'} is a FIFO (named pipe), not a data file: replace it with the dataset's file"
    )
    os.mkfifo(tmp_path / "test_batch.bin")
    with pytest.raises(data.DataError, match=r"test_batch.bin is a FIFO \(named pipe\), not a data file"):
        data.load("cifar10", "test", root=str(tmp_path))


def test_folders_and_broken_links_in_place_of_data_files(tmp_path):
    _pair(tmp_path)
    images = tmp_path / "t10k-images-idx3-ubyte.gz"
    images.unlink()
    images.mkdir()
    with pytest.raises(data.DataError, match=rf"^{images} is a folder, not a data file: replace it"):
        data.load("fashion-mnist", "test", root=str(tmp_path))
    images.rmdir()
    images.symlink_to(tmp_path / "gone")
    with pytest.raises(data.DataError, match=rf"^cannot read {images}: it does not exist \(a broken link\?\)"):
        data.load("fashion-mnist", "test", root=str(tmp_path))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_an_unreadable_file_is_named(tmp_path):
    path = _csv(tmp_path, f"{ROW}\n")
    path.chmod(0)
    with pytest.raises(data.DataError, match=rf"^cannot read {path}: permission denied"):
        data.load("mnist", "test", root=str(tmp_path))


def test_a_data_root_that_is_not_a_folder(tmp_path):
    for root in (tmp_path / "missing", _csv(tmp_path, f"{ROW}\n")):
        with pytest.raises(data.DataError) as e:
            data.batch("mnist", 4, root=str(root))
        assert str(e.value) == f"no such data folder: {root}; pass --data-root a folder that holds the dataset's files"


def test_an_empty_data_root_names_what_was_looked_for_and_never_falls_back(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    cases = {
        "mnist": f"mnist files not found: put the mnist files in {tmp_path}, or add --download (looked in "
        f"{tmp_path} and {tmp_path}/MNIST/raw for mnist_train.csv or train-images-idx3-ubyte[.gz] with "
        "train-labels-idx1-ubyte[.gz])",
        "fashion-mnist": f"fashion-mnist files not found: put the fashion-mnist files in {tmp_path}, or add "
        f"--download (looked in {tmp_path} and {tmp_path}/FashionMNIST/raw for train-images-idx3-ubyte[.gz] with "
        "train-labels-idx1-ubyte[.gz])",
        "cifar10": "cifar10 files not found: unpack cifar-10-python.tar.gz or cifar-10-binary.tar.gz into "
        f"{tmp_path}, or add --download (looked in {tmp_path}, {tmp_path}/cifar-10-batches-py, "
        f"{tmp_path}/cifar-10-batches-bin for data_batch_1 to data_batch_5 (or the same with .bin))",
    }
    for name, message in cases.items():
        with pytest.raises(data.DataError) as e:
            data.batch(name, 4, root=str(tmp_path))
        assert str(e.value) == message


def test_a_download_without_a_network_is_one_line_and_targets_the_root(tmp_path, monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):  # nothing listens on port 9
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(data.DataError) as e:
        data.batch("mnist", 4, root=str(tmp_path), download=True)
    msg = str(e.value)
    assert msg.startswith("could not download mnist (no network?): ") and "\n" not in msg
    assert msg.endswith("; put the files in a folder and pass --data-root")
    assert (tmp_path / "MNIST" / "raw").is_dir()  # torchvision was pointed at the root, not ~/.cache


# -- through the command line --------------------------------------------------------------------------


def _prune(tmp_path, root, dataset="mnist"):
    args = f"prune connectome:lenet_300_100 --method snip --data {dataset} --sparsity 0.9".split()
    return CliRunner().invoke(main, [*args, "--data-root", str(root), "-o", str(tmp_path / "o.pt")])


def test_the_cli_reports_hostile_data_in_one_line(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    _csv(bad, f"{ROW}\n{ROW[:-1]}300\n", split="train")
    fifo = tmp_path / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / "mnist_train.csv")
    assert stat.S_ISFIFO(os.stat(fifo / "mnist_train.csv").st_mode)
    cases = [
        (tmp_path / "missing", f"error: no such data folder: {tmp_path / 'missing'}; pass --data-root"),
        (tmp_path / "empty", f"error: mnist files not found: put the mnist files in {tmp_path / 'empty'}, or add"),
        (bad, f"error: {bad / 'mnist_train.csv'}, line 2, value 785: '300' is not a pixel value"),
        (fifo, f"error: {fifo / 'mnist_train.csv'} is a FIFO (named pipe), not a data file"),
    ]
    (tmp_path / "empty").mkdir()
    for root, start in cases:
        r = _prune(tmp_path, root)
        assert r.exit_code == 2, (root, r.output)
        assert r.stderr.count("\n") == 1 and r.stderr.startswith(start), r.stderr
        assert not (tmp_path / "o.pt").exists()


def test_the_cli_refuses_a_batch_too_big_for_memory_in_one_line(tmp_path):
    with open(tmp_path / "test_batch.bin", "wb") as f:  # sparse: as big as the machine's memory, on no disk
        f.truncate(3073 * (memory.machine_bytes() // 3073))
    for i in range(1, 6):
        os.link(tmp_path / "test_batch.bin", tmp_path / f"data_batch_{i}.bin")
    r = _prune(tmp_path, tmp_path, "cifar10")  # the batches are read before the model is checked against them
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.output
    assert r.stderr.startswith("error: reading ") and "of CIFAR-10 batches from" in r.stderr
    assert "over the memory budget" in r.stderr and not (tmp_path / "o.pt").exists()
