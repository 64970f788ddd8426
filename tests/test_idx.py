import gzip
import re
import shutil

import numpy as np
import pytest
import torch

from conftest import LARGER_THAN_MEMORY, terabyte_file
from lotterynet.data import load_split
from lotterynet.idx import IDXError, read_idx


@pytest.fixture(scope="session")
def gz_data_dir(data_dir, tmp_path_factory):
    """A data folder holding only gzipped copies of the four MNIST IDX files."""
    root = tmp_path_factory.mktemp("gz")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for path in (data_dir / "MNIST" / "raw").glob("*-ubyte"):
        with open(path, "rb") as src, gzip.open(raw / f"{path.name}.gz", "wb", 1) as dst:
            shutil.copyfileobj(src, dst)
    return root


@pytest.mark.parametrize("train", [False, True])
def test_gzipped_mnist_loads_identically(data_dir, gz_data_dir, train):
    images, labels = load_split("mnist", gz_data_dir, train=train)
    ref_images, ref_labels = load_split("mnist", data_dir, train=train)
    assert images.shape == ref_images.shape == (60000 if train else 10000, 1, 28, 28)
    assert torch.equal(images, ref_images) and torch.equal(labels, ref_labels)
    assert labels.dtype == torch.int64


def test_a_folder_of_plain_and_gzipped_files_loads_identically(data_dir, gz_data_dir, tmp_path):
    """Some files plain, some gzipped (a half-unpacked download): each is read in its form."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(gz_data_dir / "MNIST" / "raw" / name, raw / name)
    for name in ("train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        (raw / name).symlink_to(data_dir.resolve() / "MNIST" / "raw" / name)
    for train in (True, False):
        images, labels = load_split("mnist", tmp_path, train=train)
        ref_images, ref_labels = load_split("mnist", data_dir, train=train)
        assert torch.equal(images, ref_images) and torch.equal(labels, ref_labels)


def test_read_idx_matches_the_plain_file(data_dir, gz_data_dir):
    name = "t10k-labels-idx1-ubyte"
    plain = read_idx(data_dir / "MNIST" / "raw" / name)
    assert plain.shape == (10000,) and plain.dtype == np.uint8
    np.testing.assert_array_equal(read_idx(gz_data_dir / "MNIST" / "raw" / f"{name}.gz"), plain)


def test_big_endian_values_are_read_in_native_order(tmp_path):
    path = tmp_path / "ints.gz"
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 0x0C, 2]) + np.array([2, 3], ">u4").tobytes()
                + np.arange(6, dtype=">i4").tobytes())
    np.testing.assert_array_equal(read_idx(path), np.arange(6).reshape(2, 3))


@pytest.mark.parametrize("content,message", [
    (b"\x00\x00\x08\x01\x00\x00\x00\x05abc", "needs 13"),  # truncated data
    (b"\x00\x00\x08\x03\x00", "truncated header"),
    (b"PK\x03\x04", "not an IDX file"),
])
def test_malformed_files_name_the_fault(tmp_path, content, message):
    path = tmp_path / "bad.gz"
    with gzip.open(path, "wb") as f:
        f.write(content)
    with pytest.raises(IDXError, match=message):
        read_idx(path)


def test_a_file_larger_than_the_memory_is_refused_unread(tmp_path):
    """(a 1 TiB file, sparse here, in a data folder: read whole, it was a MemoryError's
    traceback)"""
    path = terabyte_file(tmp_path / "train-images-idx3-ubyte")
    with pytest.raises(IDXError, match=rf"^{re.escape(str(path))} {LARGER_THAN_MEMORY}"):
        read_idx(path)


def test_a_gzip_bomb_is_refused_after_the_bytes_its_header_promises(tmp_path):
    """A small ``.gz`` (16 KiB here) whose data decompresses to far more than its header
    promises (5 labels; 16 MiB of zeros) was decompressed whole before its length was checked:
    a gzip bomb in a data folder filled the memory. No more is read than the header promises
    and a byte."""
    import tracemalloc
    import zlib

    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # (31: the gzip format)
    with open(path, "wb") as f:
        f.write(packer.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05"))
        for _ in range(16):
            f.write(packer.compress(bytes(2**20)))
        f.write(packer.flush())
    assert path.stat().st_size < 2**15
    tracemalloc.start()
    try:
        with pytest.raises(IDXError, match=rf"^{re.escape(str(path))}: more than 13 bytes, but "
                                           r"its header \(5 of uint8\) needs 13$"):
            read_idx(path)
        assert tracemalloc.get_traced_memory()[1] < 2**20
    finally:
        tracemalloc.stop()


def test_a_header_that_promises_more_than_the_memory_is_refused_unread(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + b"\xff" * 12))
    with pytest.raises(IDXError, match=rf"^{re.escape(str(path))}: its header "
                                       r"\(4294967295x4294967295x4294967295 of uint8\) promises "
                                       r"[\d,.]+ TiB of data, more than the [\d,.]+ [KMG]iB of "
                                       r"memory this machine has available to read it$"):
        read_idx(path)


def test_a_gz_name_that_is_not_gzip(tmp_path):
    path = tmp_path / "labels-idx1-ubyte.gz"
    path.write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x00")
    with pytest.raises(IDXError, match="not a readable gzip file"):
        read_idx(path)


def test_a_damaged_compressed_stream_is_named(tmp_path):
    """A gzip header over a damaged deflate stream fails in zlib, not in gzip: an IDXError
    that names the file all the same (it was a zlib.error traceback)."""
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(b"")[:10] + b"\xff" * 20)  # a block of the reserved type
    with pytest.raises(IDXError, match=f"^{re.escape(str(path))}: not a readable gzip file "
                                       r"\(.*invalid block type\)$"):
        read_idx(path)


def test_truncated_gz_is_reported_corrupt_not_missing(gz_data_dir, tmp_path, monkeypatch):
    """A gzipped split cut short is corrupt: said so (not "no data ... and the download
    failed"), and nothing is downloaded over it."""
    import torchvision.datasets.mnist

    from lotterynet.datamodule import load_or_download
    from lotterynet.errors import DatasetCorrupt

    def download(*args, **kwargs):
        raise AssertionError("a corrupt data set was downloaded over")

    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", download)
    root = tmp_path / "data"
    shutil.copytree(gz_data_dir, root)
    labels = root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:-100])
    with pytest.raises(DatasetCorrupt, match=f"files under {root} are corrupt or unreadable"):
        load_or_download("mnist", root, train=False)
