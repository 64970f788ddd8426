"""MNIST-layout data folders that are damaged, incomplete or of another data set: each refused
with one line that names the file at fault (or the files missing), and what to do."""

import re
import shutil
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision.datasets.mnist

from lotterynet.cli import main
from lotterynet.data import load_split
from lotterynet.datamodule import load_or_download
from lotterynet.errors import DatasetCorrupt, DatasetNotFound
from lotterynet.idx import read_idx

FILES = [f"{split}-{kind}-ubyte" for split in ("train", "t10k")
         for kind in ("images-idx3", "labels-idx1")]


def linked_set(root, data_dir, folder="MNIST", source="MNIST", files=FILES):
    """``root`` with ``files`` of ``data_dir``'s ``source`` linked into ``root/folder/raw``."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in files:
        (raw / name).symlink_to((data_dir / source / "raw" / name).resolve())
    return raw


def offline(monkeypatch):
    def unreachable(url, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", unreachable)


def test_a_stale_processed_folder_is_not_read(data_dir, tmp_path):
    """torchvision prefers a legacy ``processed/`` folder to the raw files; junk there gave a
    KeyError traceback (an empty one: "corrupt", blamed on the intact raw files)."""
    linked_set(tmp_path, data_dir)
    processed = tmp_path / "MNIST" / "processed"
    processed.mkdir()
    (processed / "training.pt").write_bytes(b"junk\n")
    (processed / "test.pt").write_bytes(b"")
    for train, prefix in ((True, "train"), (False, "t10k")):
        _, labels = load_split("mnist", tmp_path, train=train)
        want = read_idx(data_dir / "MNIST" / "raw" / f"{prefix}-labels-idx1-ubyte")
        assert torch.equal(labels, torch.as_tensor(want).long())


def test_a_plain_file_wins_over_a_gzipped_one(data_dir, tmp_path):
    raw = linked_set(tmp_path, data_dir)
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip")
    assert load_split("mnist", tmp_path, train=False)[1].shape == (10000,)


@pytest.mark.parametrize("damage, fault", [
    (lambda data: b"hello world\n" * 100, r"not an IDX file \(magic bytes 68656c6c\)"),
    (lambda data: b"", r"not an IDX file \(magic bytes none\)"),
    (lambda data: data[:1000], "1,000 bytes, but its header .* needs 47,040,016"),
    (lambda data: data[:3] + b"\x01" + data[4:8] + data[16:60016],  # a labels file's form
     "1-dimensional uint8 data, not 3-dimensional uint8"),
])
def test_a_damaged_raw_file_is_named(data_dir, tmp_path, damage, fault):
    """Junk said "(AssertionError)", an empty file "(invalid literal for int() with base 16:
    b'')", a truncated one a reshape error: none named the file."""
    raw = linked_set(tmp_path, data_dir)
    images = raw / "train-images-idx3-ubyte"
    data = images.read_bytes()
    images.unlink()
    images.write_bytes(damage(data))
    with pytest.raises(DatasetCorrupt, match=f"\\({re.escape(str(images))}: {fault}\\); "
                                             "replace MNIST/raw/"):
        load_split("mnist", tmp_path, train=True)


def test_a_data_folder_that_cannot_be_opened_is_named_not_a_traceback(data_dir, tmp_path,
                                                                        monkeypatch):
    """``chmod 000 DATA`` (or a folder of another user's): looking for the files raised
    PermissionError as a traceback; it is the one line of files that cannot be read, which
    says to make them readable (not, as for damaged files, to replace them)."""
    raw = linked_set(tmp_path, data_dir)
    stat = Path.stat

    def denied(self, **kwargs):  # (as the system answers for a folder this user may not open)
        if self.parent == raw:
            raise PermissionError(13, "Permission denied", str(self))
        return stat(self, **kwargs)

    monkeypatch.setattr(Path, "stat", denied)
    with pytest.raises(DatasetCorrupt) as refused:
        load_split("mnist", tmp_path, train=True)
    assert str(refused.value) == (
        f"mnist: the files under {tmp_path} are corrupt or unreadable ([Errno 13] Permission "
        f"denied: '{raw}/train-images-idx3-ubyte'); make "
        "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte and their folders readable for "
        "this user")


@pytest.mark.parametrize("damage, fault", [
    (lambda data: data[:4] + (9999).to_bytes(4, "big") + data[8:-1], "10,000 images but 9,999 "
     "labels"),
    (lambda data: data[:8] + b"\x0a" + data[9:], "labels outside 0..9"),
], ids=["count", "range"])
def test_a_split_that_does_not_hold_the_set_names_its_files(data_dir, tmp_path, damage, fault):
    """Well-formed IDX files that do not hold MNIST (a label per image missing, a label 10)
    named only the data folder, and a long one cut the fault off at 200 characters: the
    split's two files are named, in full."""
    root = tmp_path / ("a-long-folder-name-" * 8)
    raw = linked_set(root, data_dir, files=FILES[:3])
    (raw / FILES[3]).write_bytes(damage((data_dir / "MNIST" / "raw" / FILES[3]).read_bytes()))
    with pytest.raises(DatasetCorrupt) as refused:
        load_split("mnist", root, train=False)
    assert str(refused.value) == (
        f"mnist: the files under {root} are corrupt or unreadable (the test split, "
        f"{raw}/t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte, has {fault}); replace "
        "MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte with intact copies")


@pytest.mark.parametrize("present, lacks", [
    (FILES[:2], "t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (or .gz); put them there"),
    (FILES[:3], "t10k-labels-idx1-ubyte (or .gz); put it there"),
])
def test_the_missing_files_are_named(data_dir, tmp_path, monkeypatch, present, lacks):
    """Some of a set's files there, the split's others not: those are named (it said "no data
    under" the folder that held the rest)."""
    raw = linked_set(tmp_path, data_dir, files=present)
    offline(monkeypatch)
    with pytest.raises(DatasetNotFound) as refused:
        load_or_download("mnist", tmp_path, train=False)
    assert str(refused.value) == (f"mnist: {raw} lacks {lacks}, and the download failed "
                                  "(<urlopen error [Errno -2] Name or service not known>)")


@pytest.mark.parametrize("inside", ["MNIST", "MNIST/raw"])
def test_the_sets_own_folder_given_as_the_data_folder_names_the_one_above(data_dir, tmp_path,
                                                                          monkeypatch, inside):
    """``--data-dir DATA/MNIST`` (or ``DATA/MNIST/raw``) said "no data under DATA/MNIST; put
    MNIST/raw/... there" and downloaded a second copy into ``DATA/MNIST/MNIST/raw``: it names
    the data folder to point at instead, and downloads nothing."""
    linked_set(tmp_path, data_dir)
    offline(monkeypatch)
    with pytest.raises(DatasetNotFound) as refused:
        load_or_download("mnist", tmp_path / inside, train=True)
    assert str(refused.value) == (f"mnist: {tmp_path / inside} is the data set's own folder, "
                                  f"inside the data folder; point data_dir= or "
                                  f"$LOTTERYNET_DATA at {tmp_path}, which holds MNIST/raw")
    assert not (tmp_path / inside / "MNIST").exists()


@pytest.mark.parametrize("folder", ["t10k-labels-idx1-ubyte", "t10k-labels-idx1-ubyte.gz"])
def test_a_folder_in_the_place_of_a_file_is_named(data_dir, tmp_path, monkeypatch, folder):
    """A folder of a file's name (an archive unpacked into one) is said to be one, and not
    downloaded over: the raw folder 'lacked' the file, which a download would not put there."""
    raw = linked_set(tmp_path, data_dir, files=FILES[:3])
    (raw / folder / "t10k-labels.idx1-ubyte").mkdir(parents=True)
    offline(monkeypatch)
    with pytest.raises(DatasetCorrupt) as refused:
        load_or_download("mnist", tmp_path, train=False)
    assert str(refused.value) == (f"mnist: {raw / folder} is a folder, not the IDX file of that "
                                  f"name; put the file itself there (plain or .gz)")


def test_a_dangling_data_folder_is_missing_not_corrupt(tmp_path, monkeypatch):
    """A --data-dir that links to nothing holds no data (it read as "corrupt")."""
    folder = tmp_path / "data"
    folder.symlink_to(tmp_path / "gone")
    offline(monkeypatch)
    with pytest.raises(DatasetNotFound) as refused:
        load_or_download("mnist", folder, train=True)
    assert not isinstance(refused.value, DatasetCorrupt)
    assert str(refused.value).startswith(f"mnist: no data under {tmp_path / 'gone'}; put ")


@pytest.mark.parametrize("folder, says", [
    ("gone", "mnist: no data under {tmp}/gone; put MNIST/raw/{{train,t10k}}-{{images-idx3,"
             "labels-idx1}}-ubyte (or .gz) there, point {setting} or $LOTTERYNET_DATA at the "
             "folder that holds them, and the download failed (<urlopen error [Errno -2] Name "
             "or service not known>)"),
    ("loop", "the data folder '{tmp}/loop' cannot be reached: a symbolic link on its way leads "
             "in a loop; point {setting} or $LOTTERYNET_DATA at the folder that holds the data")],
    ids=["missing", "loop"])
def test_a_data_modules_missing_folder_names_the_argument_given(tmp_path, monkeypatch, folder,
                                                                says):
    """A data module given a data folder with no data (or one that cannot be reached) said to
    point ``--data-dir`` at it, a flag of the commands, from Python too: it names the
    argument, ``data_dir=``, there, and the flag still where a command reports it
    (:func:`~lotterynet.errors.message`)."""
    from lotterynet.datamodule import TensorDataModule
    from lotterynet.errors import message

    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    offline(monkeypatch)
    with pytest.raises(DatasetNotFound) as refused:
        TensorDataModule("mnist", data_dir=tmp_path / folder).prepare_data()
    assert str(refused.value) == says.format(tmp=tmp_path, setting="data_dir=")
    assert message(refused.value) == says.format(tmp=tmp_path, setting="--data-dir")


@pytest.mark.parametrize("present, says", [
    ([], "mnist: no data under {tmp}; put MNIST/raw/{{train,t10k}}-{{images-idx3,labels-idx1}}"
         "-ubyte (or .gz) there, point data_dir= or $LOTTERYNET_DATA at the folder that holds "
         "them, or allow downloading (download=True)"),
    (FILES[:2], "mnist: {tmp}/MNIST/raw lacks t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte "
                "(or .gz); put them there, or allow downloading (download=True)"),
], ids=["none", "some"])
def test_a_data_module_that_may_not_download_never_tries(data_dir, tmp_path, monkeypatch,
                                                         present, says):
    """A data module always downloaded a missing set (no ``download=False``, torchvision's
    way): on a machine whose firewall drops the traffic, its download, without a timeout,
    hung. With ``download=False`` it is one line saying where to put the files, nothing tried
    and no folder made; the files there, it reads them as the default does."""
    from lotterynet.datamodule import TensorDataModule

    tried = []
    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive",
                        lambda *args, **kwargs: tried.append(args))
    if present:
        linked_set(tmp_path, data_dir, files=present)
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(DatasetNotFound) as refused:
        TensorDataModule("mnist", tmp_path, download=False).prepare_data()
    assert str(refused.value) == says.format(tmp=tmp_path)
    assert tried == [] and sorted(tmp_path.rglob("*")) == before
    kept = TensorDataModule("mnist", data_dir, download=False, val_size=0)
    kept.setup()
    assert torch.equal(kept.splits["test"][1], load_split("mnist", data_dir, train=False)[1])


def test_a_download_fills_the_raw_folder_and_is_read_there(data_dir, tmp_path, monkeypatch):
    """Missing files are downloaded by torchvision (its download alone: a stale processed/
    folder is not read) and read from the raw folder."""
    def download(url, download_root, filename, md5):  # the files as torchvision leaves them
        name = filename.removesuffix(".gz")
        shutil.copy(data_dir / "MNIST" / "raw" / name, f"{download_root}/{name}")

    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive", download)
    (tmp_path / "MNIST" / "processed").mkdir(parents=True)
    for name in ("training.pt", "test.pt"):
        (tmp_path / "MNIST" / "processed" / name).write_bytes(b"junk\n")
    _, labels = load_or_download("mnist", tmp_path, train=False)
    want = read_idx(data_dir / "MNIST" / "raw" / "t10k-labels-idx1-ubyte")
    assert torch.equal(labels, torch.as_tensor(want).long())
    assert sorted(p.name for p in (tmp_path / "MNIST" / "raw").iterdir()) == sorted(FILES)


def fashion_in_mnist(root, data_dir):
    linked_set(root, data_dir, source="FashionMNIST")


def mixed_splits(root, data_dir):
    linked_set(root, data_dir, files=FILES[:2])
    linked_set(root, data_dir, source="FashionMNIST", files=FILES[2:])


def mnist_in_fashion(root, data_dir):
    linked_set(root, data_dir, folder="FashionMNIST")


def swapped_bytes(root, data_dir, file, first):
    """MNIST with bytes ``first`` and ``first + 1`` of ``file`` swapped: it still reads."""
    raw = linked_set(root, data_dir, files=[name for name in FILES if name != file])
    data = bytearray((data_dir / "MNIST" / "raw" / file).read_bytes())
    data[first], data[first + 1] = data[first + 1], data[first]
    assert data[first] != data[first + 1]
    (raw / file).write_bytes(bytes(data))


def relabelled(root, data_dir):
    """MNIST whose test labels have two entries swapped: still 0..9, still 10,000."""
    swapped_bytes(root, data_dir, FILES[3], 8)


def repainted(root, data_dir):
    """MNIST whose first test image has two pixels swapped (row 7, at the 7's top edge)."""
    swapped_bytes(root, data_dir, FILES[2], 16 + 28 * 7 + 5)


@pytest.mark.parametrize("make, dataset, train, held", [
    (fashion_in_mnist, "mnist", True, "MNIST/raw/train-images-idx3-ubyte holds fashion-mnist's "
     "training images, not mnist's; put mnist's files there (fashion-mnist's belong under "
     "FashionMNIST/raw)"),
    (mixed_splits, "mnist", False, "MNIST/raw/t10k-images-idx3-ubyte holds fashion-mnist's test "
     "images, not mnist's"),
    (mnist_in_fashion, "fashion-mnist", False, "FashionMNIST/raw/t10k-images-idx3-ubyte holds "
     "mnist's test images, not fashion-mnist's; put fashion-mnist's files there (mnist's "
     "belong under MNIST/raw)"),
    (relabelled, "mnist", False, "MNIST/raw/t10k-labels-idx1-ubyte does not hold mnist's test "
     "labels (a damaged copy, or another data set's); replace it with an intact copy"),
    (repainted, "mnist", False, "MNIST/raw/t10k-images-idx3-ubyte does not hold mnist's test "
     "images (a damaged copy, or another data set's); replace it with an intact copy"),
])
def test_files_of_another_data_set_are_refused(data_dir, tmp_path, make, dataset, train, held):
    """Files that read cleanly but do not hold the set asked for (they trained silently)."""
    make(tmp_path, data_dir)
    with pytest.raises(DatasetCorrupt) as refused:
        load_split(dataset, tmp_path, train=train)
    assert str(refused.value).startswith(f"{dataset}: {tmp_path}/{held}")


def test_another_data_set_is_refused_on_the_command_line(data_dir, tmp_path, capsys):
    """Exit code 2, one line naming the file, nothing written."""
    mixed_splits(tmp_path / "data", data_dir)
    out = tmp_path / "run"
    assert main(["--arch", "fc2", "--structure", "dense", "--epochs", "1", "--data-dir",
                 str(tmp_path / "data"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{tmp_path}/data/MNIST/raw/t10k-images-idx3-ubyte holds fashion-mnist's" in err
    assert not out.exists()


@pytest.mark.parametrize("download", [False, True])
def test_cifar_files_that_fail_their_checksum_are_corrupt_not_missing(tmp_path, monkeypatch,
                                                                      download):
    """torchvision says "not found or corrupted" for both: CIFAR-10 files that are there but
    fail its MD5 check were reported as no data (put the files there), offline too."""
    import torchvision.datasets.cifar

    def unreachable(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", unreachable)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in ("data_batch_1", "test_batch"):
        (folder / name).write_bytes(b"not the batch")
    with pytest.raises(DatasetCorrupt, match=re.escape(f"{folder} holds files that fail "
                                                       f"torchvision's MD5 check")):
        load_split("cifar10", tmp_path, train=True, download=download)
    shutil.rmtree(folder)  # and with nothing there: missing
    with pytest.raises(DatasetNotFound, match="cifar10: no data under"):
        load_split("cifar10", tmp_path, train=True, download=download)
