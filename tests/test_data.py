"""Tests for cas_edu.data (offline; real-data tests skip unless CAS_EDU_DATA points at the shared copies)."""

from __future__ import annotations

import gzip
import os
import stat
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from cas_edu import data
from cas_edu.data import DATASETS, Dataset, DatasetNotFoundError, Split, default_root, load

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

pytestmark = pytest.mark.usefixtures("no_network")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point CAS_EDU_CACHE at a fresh temporary folder."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("CAS_EDU_CACHE", str(folder))
    return folder


def _shared_root() -> Path | None:
    value = os.environ.get("CAS_EDU_DATA", "").strip()
    return Path(value).expanduser().resolve() if value else None


def _check_common(d: Dataset) -> None:
    for split in (d.train, d.val, d.test):
        assert isinstance(split, Split)
        assert split.x.dtype == torch.float32
        assert split.y.dtype == torch.int64
        assert split.x.ndim == 4 and split.y.ndim == 1
        assert split.x.shape[0] == split.y.shape[0] == len(split)
        assert tuple(split.x.shape[1:]) == d.input_shape
        assert split.x.is_contiguous()
        assert float(split.x.min()) >= 0.0 and float(split.x.max()) <= 1.0
        assert int(split.y.min()) >= 0 and int(split.y.max()) < d.num_classes


# --------------------------------------------------------------------------- digits


def test_digits_shapes_and_splits() -> None:
    d = load("digits")
    _check_common(d)
    assert d.name == "digits"
    assert d.input_shape == (1, 8, 8)
    assert d.num_classes == 10 and d.classes == [str(i) for i in range(10)]
    assert len(d.train) + len(d.val) + len(d.test) == 1797
    assert len(d.test) == round(0.2 * 1797)
    assert len(d.val) == round(0.1 * (1797 - len(d.test)))
    assert float(d.train.x.max()) == 1.0  # 16 / 16
    # stratified: every class is present in every split
    for split in (d.train, d.val, d.test):
        assert set(split.y.tolist()) == set(range(10))


def test_digits_values_are_sklearn_over_16() -> None:
    from sklearn.datasets import load_digits

    d = load("DIGITS")
    all_x = torch.cat([d.train.x, d.val.x, d.test.x]).reshape(-1, 64).double() * 16
    ref = torch.as_tensor(load_digits().data, dtype=torch.float64)
    # same multiset of images (order differs because of the split)
    key = lambda t: sorted(map(tuple, t.round().long().tolist()))  # noqa: E731
    assert key(all_x) == key(ref)


def test_digits_split_deterministic_and_seeded() -> None:
    a, b = load("digits", seed=0), load("digits", seed=0)
    for sa, sb in ((a.train, b.train), (a.val, b.val), (a.test, b.test)):
        assert torch.equal(sa.x, sb.x) and torch.equal(sa.y, sb.y)
    c = load("digits", seed=1)
    assert torch.equal(a.test.x, c.test.x)  # the test split is fixed, independent of seed
    assert not torch.equal(a.val.x, c.val.x)  # the val split follows the seed
    assert len(a.val) == len(c.val)


def test_split_indices_disjoint_and_complete() -> None:
    y = torch.arange(1000) % 7
    for seed in (0, 1, 2):
        rest, held = data._stratified_split(y, 0.25, seed)
        assert len(held) == 250 and len(rest) == 750
        assert set(rest.tolist()).isdisjoint(held.tolist())
        assert sorted(rest.tolist() + held.tolist()) == list(range(1000))
        counts = torch.bincount(y[held], minlength=7)
        assert int(counts.max() - counts.min()) <= 1  # stratified
    a = data._stratified_split(y, 0.25, 0)[1]
    assert torch.equal(a, data._stratified_split(y, 0.25, 0)[1])
    assert not torch.equal(a, data._stratified_split(y, 0.25, 1)[1])


@pytest.mark.parametrize("fraction", [1.0, -0.1, 1.5, True])
def test_bad_val_fraction(fraction: float) -> None:
    with pytest.raises(ValueError, match="val_fraction"):
        load("digits", val_fraction=fraction)


def test_val_fraction_zero_trains_on_the_whole_training_set() -> None:
    """``--val-fraction 0`` (like the official scripts): every training image trains, the val split is empty."""
    everything, split = load("digits", val_fraction=0), load("digits", val_fraction=0.1)
    assert len(everything.val) == 0 and everything.val.x.shape == (0, *split.input_shape)
    assert len(everything.train) == len(split.train) + len(split.val)
    assert torch.equal(everything.test.x, split.test.x)
    merged = torch.cat([split.train.x, split.val.x]).flatten(1)
    assert sorted(map(tuple, merged.tolist())) == sorted(map(tuple, everything.train.x.flatten(1).tolist()))


def test_val_fraction_respected() -> None:
    d = load("digits", val_fraction=0.5)
    assert abs(len(d.val) - len(d.train)) <= 1


# --------------------------------------------------------------------------- names, roots, missing data


def test_unknown_dataset() -> None:
    with pytest.raises(ValueError) as info:
        load("imagenet")
    msg = str(info.value)
    for name in DATASETS:
        assert name in msg


def test_datasets_tuple() -> None:
    assert DATASETS == ("digits", "mnist", "fashion_mnist", "cifar10", "svhn")


def test_default_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CAS_EDU_DATA", raising=False)
    assert default_root() == Path("~/.cache/cas_edu").expanduser()
    monkeypatch.setenv("CAS_EDU_DATA", str(tmp_path))
    assert default_root() == tmp_path


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "Fashion-MNIST", "cifar10", "svhn"])
def test_missing_data_raises_quickly(name: str, tmp_path: Path, cache: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    start = time.monotonic()
    with pytest.raises(FileNotFoundError) as info:
        load(name, root=empty)
    assert time.monotonic() - start < 5
    msg = str(info.value)
    assert str(empty) in msg and "download=True" in msg and "CAS_EDU_DATA" in msg
    assert info.value.__cause__ is None and info.value.__suppress_context__
    # what the CLI needs to say the fix with its own flags (--download, --data-root)
    assert isinstance(info.value, DatasetNotFoundError)
    assert info.value.dataset in msg and str(info.value.folder) in msg and info.value.layout in msg
    assert str(info.value.folder).startswith(str(empty))
    assert list(empty.iterdir()) == []  # nothing created


def test_missing_data_uses_env_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAS_EDU_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load("mnist")


# --------------------------------------------------------------------------- MNIST-style .gz extraction


def _idx_bytes(arr: np.ndarray) -> bytes:
    header = struct.pack(">I", 0x0800 + arr.ndim) + b"".join(struct.pack(">I", s) for s in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def _write_fake_idx(raw: Path, n_train: int = 20, n_test: int = 10) -> tuple[np.ndarray, np.ndarray]:
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 4, 5), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 4, 5), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for name, arr in arrays.items():
        with gzip.open(raw / (name + ".gz"), "wb") as fh:
            fh.write(_idx_bytes(arr))
    return arrays["train-images-idx3-ubyte"], arrays["t10k-images-idx3-ubyte"]


def test_idx_gz_extracted_in_writable_root(tmp_path: Path, cache: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    x_train, x_test = _write_fake_idx(raw)
    d = load("mnist", root=tmp_path)
    _check_common(d)
    assert (raw / "train-images-idx3-ubyte").is_file()  # extracted next to the .gz
    assert not cache.exists()
    assert d.input_shape == (1, 4, 5) and d.classes == [str(i) for i in range(10)]
    assert len(d.train) + len(d.val) == 20 and len(d.val) == 2 and len(d.test) == 10
    assert torch.allclose(d.test.x[:, 0], torch.as_tensor(x_test).float() / 255)
    got = sorted(map(tuple, torch.cat([d.train.x, d.val.x]).reshape(20, -1).mul(255).round().long().tolist()))
    assert got == sorted(map(tuple, x_train.reshape(20, -1).astype(np.int64).tolist()))


def test_idx_gz_read_only_root_uses_cache(tmp_path: Path, cache: Path) -> None:
    root = tmp_path / "ro"
    raw = root / "FashionMNIST" / "raw"
    _write_fake_idx(raw)
    modes = {p: p.stat().st_mode for p in (raw, raw.parent, root)}
    for p in modes:
        p.chmod(0o555)
    try:
        d = load("fashion_mnist", root=root)
        assert sorted(p.name for p in raw.iterdir()) == sorted(n + ".gz" for n in data._IDX_FILES)
        assert (cache / "FashionMNIST" / "raw" / "train-images-idx3-ubyte").is_file()
        assert len(d.train) + len(d.val) == 20 and len(d.test) == 10
        assert d.num_classes == 10 and d.classes[0] == "T-shirt/top"
        d2 = load("fashion_mnist", root=root)  # second load reuses the cache
        assert torch.equal(d.test.x, d2.test.x)
    finally:
        for p, mode in modes.items():
            p.chmod(stat.S_IMODE(mode))


# --------------------------------------------------------------------------- npz


def test_npz_folder_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x_a = rng.integers(0, 256, (30, 5, 6, 3), dtype=np.uint8)
    x_b = rng.integers(0, 256, (10, 5, 6, 3), dtype=np.uint8)
    x_t = rng.integers(0, 256, (8, 5, 6, 3), dtype=np.uint8)
    y_a, y_b, y_t = np.arange(30) % 3, np.arange(10) % 3, (np.arange(8) % 3).astype(np.int32)
    np.savez(tmp_path / "part-b.npz", x=x_b, y=y_b)
    np.savez(tmp_path / "part-a.npz", x=x_a, y=y_a)
    np.savez_compressed(tmp_path / "test.npz", x=x_t, y=y_t)
    (tmp_path / "classes.txt").write_text("cat\ndog\nbird\n")
    d = load(f"npz:{tmp_path}", val_fraction=0.25)
    _check_common(d)
    assert d.input_shape == (3, 5, 6)
    assert d.classes == ["cat", "dog", "bird"] and d.num_classes == 3
    assert len(d.train) == 30 and len(d.val) == 10 and len(d.test) == 8
    # test split keeps file order; exact values /255 with HWC -> CHW
    expected = torch.as_tensor(x_t).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(d.test.x, expected)
    assert d.test.y.tolist() == y_t.tolist()
    assert float(d.test.x[2, 1, 3, 4]) == pytest.approx(x_t[2, 3, 4, 1] / 255)
    # train + val is the sorted concatenation part-a, part-b (val indices are a subset, order kept)
    all_x = torch.as_tensor(np.concatenate([x_a, x_b])).permute(0, 3, 1, 2).float() / 255
    rest, held = data._stratified_split(torch.as_tensor(np.concatenate([y_a, y_b])), 0.25, 0)
    assert torch.equal(d.train.x, all_x[rest]) and torch.equal(d.val.x, all_x[held])


def test_npz_grey_single_file_carves_test(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, (50, 7, 4), dtype=np.uint8)
    y = np.arange(50, dtype=np.int64) % 5
    f = tmp_path / "grey.npz"
    np.savez(f, x=x, y=y)
    d = load(f"NPZ:{f}")
    _check_common(d)
    assert d.input_shape == (1, 7, 4)
    assert d.classes == ["0", "1", "2", "3", "4"]
    assert len(d.test) == 10 and len(d.train) + len(d.val) == 40
    all_rows = sorted(map(tuple, torch.cat([d.train.x, d.val.x, d.test.x]).reshape(50, -1).mul(255).round().long().tolist()))
    assert all_rows == sorted(map(tuple, x.reshape(50, -1).astype(np.int64).tolist()))
    # folder without a test file behaves the same
    d2 = load(f"npz:{tmp_path}")
    assert torch.equal(d.test.x, d2.test.x) and torch.equal(d.val.x, d2.val.x)


@pytest.mark.parametrize(
    "arrays, match",
    [
        ({"x": np.zeros((4, 3, 3), np.uint8)}, "'x' and 'y'"),
        ({"x": np.zeros((4, 3, 3), np.int64), "y": np.zeros(4, np.int64)}, "uint8"),
        ({"x": np.zeros((4, 3), np.uint8), "y": np.zeros(4, np.int64)}, "N x H x W"),
        ({"x": np.zeros((4, 3, 3), np.uint8), "y": np.zeros(5, np.int64)}, "4 images"),
        ({"x": np.zeros((4, 3, 3), np.uint8), "y": np.zeros(4, np.float32)}, "integer"),
        ({"x": np.zeros((4, 3, 3), np.uint8), "y": -np.ones(4, np.int64)}, "non-negative"),
    ],
)
def test_npz_bad_content(tmp_path: Path, arrays: dict[str, np.ndarray], match: str) -> None:
    f = tmp_path / "bad.npz"
    np.savez(f, **arrays)
    with pytest.raises(ValueError, match=match) as info:
        load(f"npz:{tmp_path}")
    assert "bad.npz" in str(info.value)


def test_npz_not_an_archive(tmp_path: Path) -> None:
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="junk.npz"):
        load(f"npz:{tmp_path}")


def test_npz_shape_mismatch_and_classes(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", x=np.zeros((6, 3, 3), np.uint8), y=np.arange(6) % 2)
    np.savez(tmp_path / "test.npz", x=np.zeros((2, 4, 4), np.uint8), y=np.arange(2))
    with pytest.raises(ValueError, match="test.npz"):
        load(f"npz:{tmp_path}")
    np.savez(tmp_path / "test.npz", x=np.zeros((2, 3, 3), np.uint8), y=np.array([0, 2]))
    (tmp_path / "classes.txt").write_text("only-one\n")
    with pytest.raises(ValueError, match="classes.txt"):
        load(f"npz:{tmp_path}")


def test_npz_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load(f"npz:{tmp_path / 'nope'}")
    with pytest.raises(FileNotFoundError):
        load(f"npz:{tmp_path}")  # folder without .npz files


def test_cifar10_npz_layout_synthetic(tmp_path: Path) -> None:
    folder = tmp_path / "cifar10"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(2):
        np.savez(folder / f"train-{i}.npz", x=rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), y=np.arange(20) % 10)
    x_t = rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    np.savez(folder / "test.npz", x=x_t, y=np.arange(10, dtype=np.uint8))
    d = load("CIFAR10", root=tmp_path)
    _check_common(d)
    assert len(d.train) + len(d.val) == 40 and len(d.test) == 10
    assert d.classes == CIFAR10_NAMES and d.input_shape == (3, 32, 32)
    assert torch.equal(d.test.x, torch.as_tensor(x_t).permute(0, 3, 1, 2).float() / 255)


# --------------------------------------------------------------------------- real data (shared copies)


def test_real_fashion_mnist(cache: Path) -> None:
    root = _shared_root()
    gz = root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte.gz" if root else None
    if gz is None or not gz.is_file():
        pytest.skip(f"CAS_EDU_DATA not set / FashionMNIST raw files absent: {gz}")
    d = load("fashion-mnist", root=root)
    _check_common(d)
    assert len(d.train) + len(d.val) == 60000 and len(d.test) == 10000
    assert len(d.val) == 6000
    assert d.input_shape == (1, 28, 28) and d.num_classes == 10
    counts = torch.bincount(torch.cat([d.train.y, d.val.y]), minlength=10)
    assert counts.tolist() == [6000] * 10
    assert torch.bincount(d.val.y, minlength=10).tolist() == [600] * 10  # stratified


def test_real_cifar10_npz(tmp_path: Path) -> None:
    root = _shared_root()
    src = root / "cifar10" if root else None
    if src is None or not (src / "test.npz").is_file() or not (src / "train-0.npz").is_file():
        pytest.skip(f"CAS_EDU_DATA not set / cifar10 npz files absent: {src}")
    folder = tmp_path / "cifar10"
    folder.mkdir()
    for name in ("test.npz", "train-0.npz"):
        (folder / name).symlink_to(src / name)
    d = load("cifar10", root=tmp_path)
    _check_common(d)
    assert len(d.train) + len(d.val) == 12500 and len(d.test) == 10000
    assert d.input_shape == (3, 32, 32)
    assert d.classes == CIFAR10_NAMES
    assert torch.bincount(d.test.y, minlength=10).tolist() == [1000] * 10


# --------------------------------------------------------------------------- npz files that must be refused


def _save_good(folder: Path, n: int = 40, classes: int = 4) -> Path:
    rng = np.random.default_rng(0)
    np.savez(folder / "a.npz", x=rng.integers(0, 256, (n, 4, 4), dtype=np.uint8), y=np.arange(n) % classes)
    return folder / "a.npz"


@pytest.mark.parametrize("damage", ["truncated", "tail-cut", "flipped-byte", "compressed-flipped-byte"])
def test_npz_truncated_or_corrupt_is_a_value_error_naming_the_file(tmp_path: Path, damage: str) -> None:
    f = _save_good(tmp_path)
    if damage.startswith("compressed"):
        with np.load(f) as arrays:
            np.savez_compressed(f, **arrays)
    raw = f.read_bytes()
    f.write_bytes({"truncated": raw[: len(raw) // 2], "tail-cut": raw[:-10]}.get(
        damage, raw[:150] + bytes([raw[150] ^ 0xFF]) + raw[151:]))
    with pytest.raises(ValueError, match="a.npz") as info:
        load(f"npz:{tmp_path}")
    assert "\n" not in str(info.value)


def test_npz_pickled_object_arrays_are_refused_without_unpickling(tmp_path: Path) -> None:
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}] * 4, dtype=object), y=np.arange(4) % 2)
    with pytest.raises(ValueError, match="obj.npz.*pickled"):
        load(f"npz:{tmp_path}")


_NAN_IMAGES = np.full((8, 3, 3), 0.5, np.float32)
_NAN_IMAGES[0, 0, 0] = np.nan


@pytest.mark.parametrize("x, match", [
    (_NAN_IMAGES, "NaN"),
    (np.full((8, 3, 3), 2.0, np.float32), r"\[0, 1\]"),
    (np.full((8, 3, 3), -0.5, np.float64), r"\[0, 1\]"),
    (np.zeros((8, 3, 3), bool), "uint8"),
    (np.zeros((8, 3, 32, 32), np.uint8), "channels-first"),
    (np.zeros((0, 3, 3), np.uint8), "no images"),
], ids=["nan", "above-1", "below-0", "bool", "channels-first", "empty"])
def test_npz_images_must_be_finite_in_range_and_channels_last(tmp_path: Path, x, match: str) -> None:
    np.savez(tmp_path / "img.npz", x=x, y=np.arange(len(x)) % 2)
    with pytest.raises(ValueError, match=match) as info:
        load(f"npz:{tmp_path}")
    assert "img.npz" in str(info.value)


def test_npz_float_images_in_0_1_load_unscaled(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((20, 3, 3, 3)).astype(np.float64)
    np.savez(tmp_path / "train.npz", x=x, y=np.arange(20) % 2)
    np.savez(tmp_path / "test.npz", x=(x[:4] * 255).astype(np.uint8), y=np.arange(4) % 2)  # uint8 beside float
    d = load(f"npz:{tmp_path}", val_fraction=0)
    assert torch.allclose(d.train.x, torch.as_tensor(x, dtype=torch.float32).permute(0, 3, 1, 2))
    assert torch.equal(d.test.x, torch.as_tensor((x[:4] * 255).astype(np.uint8)).permute(0, 3, 1, 2).float() / 255)


@pytest.mark.parametrize("y, match", [
    (np.array([0, 1, 2.5, 3] * 5), "integer"),
    (np.array([0, 1, -1, 2] * 5), "non-negative"),
    (np.array([0, 1, 2, 10 ** 6] * 5), "1000001-way classifier"),
    (np.arange(1500), "at most 1000"),                       # every class present, still too many for labels alone
    (np.array([0, 1, 500, 2] * 5), "never occur"),
    (np.array([0, 1, 9, 2] * 5), r"6 of the classes 0\.\.9 never occur \(3, 4, 5, 6, 7, \.\.\.\)"),
    (np.zeros(20, np.int64), "at least 2"),
    (np.array([True, False] * 10), "integer"),
], ids=["float", "negative", "huge", "too-many", "sparse", "gaps", "one-class", "bool"])
def test_npz_labels_must_be_class_indices_0_to_k(tmp_path: Path, y: np.ndarray, match: str) -> None:
    np.savez(tmp_path / "lab.npz", x=np.zeros((len(y), 3, 3), np.uint8), y=y)
    with pytest.raises(ValueError, match=match):
        load(f"npz:{tmp_path}")


@pytest.mark.parametrize("y", [np.array([0, 1, 9, 2] * 5), np.zeros(20, np.int64), np.array([0, 255] * 10, np.uint8),
                               np.array([0, 1, -1, 2] * 5)], ids=["gaps", "one-class", "uint8-255", "negative"])
def test_an_npz_error_names_the_file_given_not_its_folder(tmp_path: Path, y: np.ndarray) -> None:
    f = tmp_path / "mine.npz"
    np.savez(f, x=np.zeros((len(y), 3, 3), np.uint8), y=y)
    with pytest.raises(ValueError) as info:
        load(f"npz:{f}")
    assert str(info.value).startswith(f"{f}:"), str(info.value)


def test_npz_test_labels_must_be_classes_seen_in_training(tmp_path: Path) -> None:
    _save_good(tmp_path, classes=4)
    np.savez(tmp_path / "test.npz", x=np.zeros((4, 4, 4), np.uint8), y=np.array([0, 1, 2, 7]))
    with pytest.raises(ValueError, match=r"test.npz: label 7 never occurs in the training files \(classes 0..3\)"):
        load(f"npz:{tmp_path}")


def test_npz_classes_txt_declares_classes_absent_from_the_labels(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", x=np.zeros((20, 3, 3), np.uint8), y=np.array([0, 5] * 10))
    (tmp_path / "classes.txt").write_text("\n".join(f"c{i}" for i in range(6)))
    assert load(f"npz:{tmp_path}").num_classes == 6  # declared: gaps allowed
    (tmp_path / "classes.txt").write_text("c0\nc1\nc2\n")
    with pytest.raises(ValueError, match="label 5 has no name in .*classes.txt"):
        load(f"npz:{tmp_path}")


def test_cifar10_npz_labels_beyond_its_ten_classes_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "cifar10"
    folder.mkdir()
    np.savez(folder / "train-0.npz", x=np.zeros((20, 32, 32, 3), np.uint8), y=np.arange(20) % 12)
    np.savez(folder / "test.npz", x=np.zeros((4, 32, 32, 3), np.uint8), y=np.arange(4))
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 10\)"):
        load("cifar10", root=tmp_path)


def test_a_data_root_that_is_a_file_is_a_value_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        load("cifar10", root=tmp_path / "file")


def test_dataset_key_is_canonical_and_keeps_npz_paths() -> None:
    assert data.dataset_key(" Fashion-MNIST ") == "fashion_mnist" and data.dataset_key("CIFAR_10") == "cifar10"
    assert data.dataset_key("NPZ:/Data/My-Set") == "npz:/Data/My-Set"
    for bad in ("imagenet", "npz:", "", 3):
        with pytest.raises(ValueError):
            data.dataset_key(bad)


# --------------------------------------------------------------------------- failed downloads


@pytest.mark.parametrize("name, shown", [("cifar10", "CIFAR-10"), ("mnist", "MNIST"), ("svhn", "SVHN")])
def test_download_without_network_is_one_line_with_the_offline_fix(name: str, shown: str, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import urllib.error
    import urllib.request

    def unreachable(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError(OSError("Network is unreachable"))

    monkeypatch.setattr(urllib.request, "urlopen", unreachable)
    with pytest.raises(data.DownloadError) as info:
        load(name, root=tmp_path, download=True)
    message = str(info.value)
    assert message.startswith(f"could not download {shown} (no network: ") and "Network is unreachable" in message
    assert str(tmp_path) in message and "CAS_EDU_DATA" in message and "\n" not in message
    assert isinstance(info.value, OSError)


def test_download_into_a_full_disk_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import urllib.request

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(urllib.request, "urlopen", disk_full)
    with pytest.raises(data.DownloadError, match=r"into .*No space left on device.*free space"):
        load("cifar10", root=tmp_path, download=True)
