"""Dataset loading for cas_edu: small in-memory image datasets with train / val / test splits.

This module owns the datasets (:func:`load`, :class:`Dataset`, :class:`Split`, :data:`DATASETS`) and where their
files are found (:func:`default_root`); it imports no other cas_edu module.

Every loader returns a :class:`Dataset` holding three :class:`Split` objects whose images are
``float32`` tensors shaped ``N x C x H x W`` with values in ``[0, 1]`` and whose labels are
``int64`` tensors. The validation split is always carved out of the training data with a seeded
``torch.Generator`` (class-stratified), so model selection never needs to look at the test split.

Known names (case-insensitive; ``-`` and ``_`` are interchangeable):

* ``digits`` -- scikit-learn's 1,797 real 8x8 digit images; needs no files. A fixed seeded,
  stratified 20 % test split (independent of ``seed``), then ``val_fraction`` of the rest as val
  (``val_fraction=0``: an empty val split, the whole rest trains).
* ``mnist``, ``fashion_mnist``, ``cifar10``, ``svhn`` -- via ``torchvision.datasets``; test split is
  torchvision's test split. MNIST / Fashion-MNIST folders that hold only the ``.gz`` raw files are
  decompressed (pure Python, no network) next to them, or into the cache root
  (``$CAS_EDU_CACHE`` or ``~/.cache/cas_edu``) when the data folder is read-only. ``cifar10`` also
  reads ``ROOT/cifar10/train-*.npz`` + ``ROOT/cifar10/test.npz`` (uint8 HWC arrays) when
  torchvision's ``cifar-10-batches-py`` folder is absent.
* ``npz:PATH`` -- a folder of ``.npz`` files (or one file) with ``x`` (N x H x W x C or N x H x W;
  uint8 0..255, or floating-point in [0, 1]) and ``y`` (integer class indices); ``test*.npz`` is the
  test split, the rest is train (a fixed seeded 20 % test split is carved out when there is no test
  file); an optional ``classes.txt`` names the classes, one per line. Without it the labels must be
  the indices 0..K-1 with every class present in the training files and K <= ``MAX_CLASSES`` (1000),
  so that ids (3, 17, 1042, ...) are not mistaken for a huge classifier head. Files are never
  unpickled; a corrupt, truncated or inconsistent file raises ``ValueError`` naming it.

The data root is the ``root`` argument, else ``$CAS_EDU_DATA``, else ``~/.cache/cas_edu``.
With ``download=False`` nothing touches the network; missing data raises ``FileNotFoundError``
(:class:`DatasetNotFoundError`, naming the folder and the files expected, for the downloadable datasets).
With ``download=True`` a failed download raises :class:`DownloadError` (an ``OSError``) with one line
naming the cause (no network, a folder that cannot be written, a corrupt download) and the offline fix.
"""

from __future__ import annotations

import errno
import gzip
import http.client
import numbers
import os
import shutil
import stat
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

__all__ = ["DATASETS", "MAX_CLASSES", "Dataset", "DatasetNotFoundError", "DownloadError", "Split", "dataset_key", "default_root", "load"]

DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion_mnist", "cifar10", "svhn")

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
_DIGIT_CLASSES: tuple[str, ...] = tuple(str(i) for i in range(10))
_IDX_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_ALIASES: dict[str, str] = {"fashionmnist": "fashion_mnist", "cifar_10": "cifar10"}
#: Most classes an npz dataset may infer from its labels (ImageNet-1k's 1,000): a larger label is far more
#: likely an id than a class index, and would silently build a huge classifier head. A ``classes.txt`` that
#: names more classes lifts the limit.
MAX_CLASSES = 1000
# Seed of the carved-out test split (digits, npz without test file): fixed so that the test set
# never changes with the run's ``seed``; only the train/val division follows ``seed``.
_TEST_SPLIT_SEED = 0
_TEST_FRACTION = 0.2


@dataclass
class Split:
    """Images ``x`` (float32, N x C x H x W, in [0, 1]) and labels ``y`` (int64, N).

    Shape: x (N, C, H, W) float32 in [0, 1]; y (N,) int64 class indices; ``len(split)`` is N.
    Raises: nothing of its own (the loaders check what they put in).
    """

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        """Number of examples."""
        return int(self.y.shape[0])


@dataclass
class Dataset:
    """A named dataset with train / val / test splits and class names.

    ``input_shape`` is (C, H, W) of one image, ``num_classes`` the number of class names.
    Raises: nothing of its own.
    """

    name: str
    train: Split
    val: Split
    test: Split
    classes: list[str]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape (C, H, W) of one image."""
        return tuple(int(s) for s in self.train.x.shape[1:])

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)


class DownloadError(OSError):
    """A dataset download failed (no network, a failed checksum, or the folder could not be written).

    Raised by :func:`load` with ``download=True``; an ``OSError``, with one line naming the cause and the offline fix.
    Raises: nothing of its own.
    """


class DatasetNotFoundError(FileNotFoundError):
    """A dataset's files are missing and ``download`` was False; raised by :func:`load`, with a message that names
    the Python arguments (``download=True``, ``root=``).

    ``dataset`` (its name as shown), ``folder`` (where it was looked for) and ``layout`` (the files expected there)
    let a caller say the fix in its own terms: the CLI names ``--download`` and ``--data-root``.
    Raises: nothing of its own.
    """

    dataset: str
    folder: Path
    layout: str


def dataset_key(name: str) -> str:
    """The canonical spelling of a dataset name: one of :data:`DATASETS` (case-insensitive, ``-`` or ``_``) or
    ``npz:PATH`` with PATH kept as given (not lower-cased); whether the files exist is :func:`load`'s business.

    Raises: ``ValueError`` for a non-string, an unknown name, or ``npz:`` without a path.
    """
    if not isinstance(name, str):
        raise ValueError(f"dataset must be a name such as 'digits' or 'npz:PATH', got {name!r}")
    raw = name.strip()
    if raw.lower().startswith("npz:"):
        path = raw[4:].strip()
        if not path:
            raise ValueError(f"dataset {name!r} needs a path after npz:, e.g. 'npz:/data/my_images' (a folder of .npz "
                             "files) or 'npz:file.npz'")
        return f"npz:{path}"
    key = raw.lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}, or 'npz:PATH' for your own .npz files")
    return key


# --------------------------------------------------------------------------- roots


def _env_path(var: str) -> Path | None:
    value = os.environ.get(var, "").strip()
    return Path(value).expanduser() if value else None


def default_root() -> Path:
    """Data root used when ``root`` is None: ``$CAS_EDU_DATA`` if set, else ``~/.cache/cas_edu``.

    Raises: nothing of its own.
    """
    return _env_path("CAS_EDU_DATA") or Path("~/.cache/cas_edu").expanduser()


def _cache_root() -> Path:
    """Writable folder for decompressed files: ``$CAS_EDU_CACHE`` if set, else ``~/.cache/cas_edu``."""
    return _env_path("CAS_EDU_CACHE") or Path("~/.cache/cas_edu").expanduser()


def _resolve_root(root: str | os.PathLike[str] | None) -> Path:
    return Path(root).expanduser() if root is not None else default_root()


# --------------------------------------------------------------------------- splitting


def _stratified_split(y: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded class-stratified split of ``range(len(y))`` into (rest, held_out) sorted index tensors."""
    n = int(y.shape[0])
    if n < 2:
        raise ValueError(f"cannot split {n} example(s) into two non-empty parts")
    k = min(max(int(round(fraction * n)), 1), n - 1)
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=gen)
    y_perm = y[perm]
    labels, counts = torch.unique(y_perm, return_counts=True)
    # Largest-remainder quotas so the held-out part has exactly k examples.
    ideal = counts.double() * (k / n)
    quota = ideal.floor().long()
    short = k - int(quota.sum())
    if short > 0:
        remainder = ideal - quota.double()
        order = torch.argsort(-remainder, stable=True)
        quota[order[:short]] += 1
    held = torch.zeros(n, dtype=torch.bool)
    for label, q in zip(labels.tolist(), quota.tolist()):
        if q:
            members = perm[y_perm == label]
            held[members[:q]] = True
    idx = torch.arange(n)
    return idx[~held], idx[held]


def _take(x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> Split:
    return Split(x[idx].contiguous(), y[idx].contiguous())


def _make_dataset(
    name: str,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    classes: list[str],
    val_fraction: float,
    seed: int,
) -> Dataset:
    k = len(classes)
    for part, labels in (("training", y_train), ("test", y_test)):
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= k):
            raise ValueError(f"{name}: {part} labels must be class indices in [0, {k}) for its {k} classes, "
                             f"found {int(labels.min())} to {int(labels.max())}")
    if val_fraction == 0:  # no validation split: train on everything (like the official scripts)
        train_idx, val_idx = torch.arange(int(y_train.shape[0])), torch.zeros(0, dtype=torch.int64)
    else:
        train_idx, val_idx = _stratified_split(y_train, val_fraction, seed)
    return Dataset(
        name=name,
        train=_take(x_train, y_train, train_idx),
        val=_take(x_train, y_train, val_idx),
        test=Split(x_test.contiguous(), y_test.contiguous()),
        classes=list(classes),
    )


def _images(x: Any, channels_last: bool) -> torch.Tensor:
    """uint8 (0..255) or floating ([0, 1]) images, N x H x W, N x H x W x C (``channels_last``) or N x C x H x W,
    -> float32 N x C x H x W in [0, 1]."""
    t = torch.as_tensor(np.asarray(x))
    if t.ndim == 3:
        t = t.unsqueeze(1)
    elif channels_last:
        t = t.permute(0, 3, 1, 2)
    if t.is_floating_point():
        return t.to(torch.float32).contiguous()
    return t.to(torch.float32).div_(255.0).contiguous()


def _labels(y: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(y)).to(torch.int64).reshape(-1)


# --------------------------------------------------------------------------- digits


def _load_digits(val_fraction: float, seed: int) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.as_tensor(np.asarray(bunch.images, dtype=np.float32) / 16.0).unsqueeze(1).contiguous()
    y = torch.as_tensor(np.asarray(bunch.target)).to(torch.int64)
    rest, test = _stratified_split(y, _TEST_FRACTION, _TEST_SPLIT_SEED)
    return _make_dataset("digits", x[rest], y[rest], x[test], y[test], list(_DIGIT_CLASSES), val_fraction, seed)


# --------------------------------------------------------------------------- torchvision


def _missing(dataset: str, folder: Path, layout: str) -> DatasetNotFoundError:
    err = DatasetNotFoundError(
        f"{dataset} not found in {folder} (download=False): pass download=True on a machine with internet, "
        f"or set CAS_EDU_DATA (or root=) to a folder holding {layout}."
    )
    err.dataset, err.folder, err.layout = dataset, folder, layout
    return err


def _one_line(text: Any, limit: int = 200) -> str:
    """``str(text)`` on one line, cut to ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


#: errno values that blame the local folder, not the network, when a download fails.
_LOCAL_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EISDIR,
                           errno.ENOTDIR, errno.EEXIST, errno.ENAMETOOLONG})


def _download_failed(dataset: str, folder: Path, layout: str, err: BaseException) -> DownloadError:
    """One-line :class:`DownloadError` for a failed torchvision download, with the offline fix."""
    fix = f"copy the files into {folder} ({layout}) or set CAS_EDU_DATA to a folder that holds them"
    text = str(err)
    if isinstance(err, RuntimeError) and text.startswith("Error downloading"):  # MNIST: every mirror failed
        lines = [ln for ln in text.splitlines() if ln.strip()]
        return DownloadError(f"could not download {dataset} (no network: {_one_line(lines[-1])}); {fix}")
    if isinstance(err, OSError) and err.errno in _LOCAL_ERRNOS:  # the folder: permission denied, disk full, ...
        return DownloadError(f"could not download {dataset} into {folder} ({_one_line(err)}); choose a writable "
                             f"folder with free space (root= / --data-root), or {fix}")
    if isinstance(err, (OSError, http.client.HTTPException)):  # URLError, refused / reset connections, timeouts
        reason = getattr(err, "reason", None) or err
        return DownloadError(f"could not download {dataset} (no network: {_one_line(reason)}); {fix}")
    return DownloadError(f"could not download {dataset} ({_one_line(err)}: an interrupted or corrupt download?); "
                         f"delete the partial files in {folder} and retry, or {fix}")


def _torchvision(factory: Callable[[], Any], dataset: str, folder: Path, layout: str, download: bool) -> Any:
    """Build a torchvision dataset. With download=False its 'not found' RuntimeError becomes our
    :class:`DatasetNotFoundError`; with download=True a failed download becomes a one-line :class:`DownloadError`."""
    try:
        return factory()
    except RuntimeError as err:
        if not download:
            raise _missing(dataset, folder, layout) from None
        raise _download_failed(dataset, folder, layout, err) from err
    except (OSError, http.client.HTTPException) as err:
        if not download:
            raise
        raise _download_failed(dataset, folder, layout, err) from err


def _writable(folder: Path) -> bool:
    """True if ``folder`` may be written: permission bits allow it (honoured even for root) and os.access agrees."""
    try:
        mode = folder.stat().st_mode
    except OSError:
        return False
    return bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)) and os.access(folder, os.W_OK | os.X_OK)


def _gzip_size(path: Path) -> int:
    """Uncompressed size (mod 2**32) recorded in a gzip file's trailer."""
    with open(path, "rb") as fh:
        fh.seek(-4, os.SEEK_END)
        return struct.unpack("<I", fh.read(4))[0]


def _materialise(src_dir: Path, dest_dir: Path) -> None:
    """Make the four extracted idx files exist in ``dest_dir``, decompressing ``src_dir``'s .gz files."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    for name in _IDX_FILES:
        dest = dest_dir / name
        plain, packed = src_dir / name, src_dir / (name + ".gz")
        if plain.is_file():
            if dest.is_file() and dest.stat().st_size == plain.stat().st_size:
                continue
            opener: Callable[[], Any] = lambda p=plain: open(p, "rb")
        else:
            if dest.is_file() and dest.stat().st_size % 2**32 == _gzip_size(packed):
                continue
            opener = lambda p=packed: gzip.open(p, "rb")
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=dest_dir)
        try:
            with os.fdopen(fd, "wb") as out, opener() as src:
                shutil.copyfileobj(src, out, length=1 << 20)
            os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; these are plain shared data
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _prepare_idx_root(root: Path, cls: str) -> Path:
    """Return the root torchvision should read ``cls`` (MNIST / FashionMNIST) from, extracting .gz files if needed."""
    raw = root / cls / "raw"
    if all((raw / n).is_file() for n in _IDX_FILES):
        return root
    if not all((raw / n).is_file() or (raw / (n + ".gz")).is_file() for n in _IDX_FILES):
        return root  # nothing usable here: torchvision downloads or reports it missing
    if _writable(raw):
        try:
            _materialise(raw, raw)
            return root
        except OSError:
            pass  # e.g. a read-only mount despite the permission bits: fall back to the cache
    cache = _cache_root()
    _materialise(raw, cache / cls / "raw")
    return cache


def _load_idx_family(name: str, root: Path, download: bool, val_fraction: float, seed: int) -> Dataset:
    from torchvision import datasets as tvd

    cls_name = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}[name]
    cls = getattr(tvd, cls_name)
    tv_root = _prepare_idx_root(root, cls_name)
    layout = f"{cls_name}/raw/ with the four idx files ({', '.join(n + '[.gz]' for n in _IDX_FILES)})"
    shown = "MNIST" if name == "mnist" else "Fashion-MNIST"

    def make(train: bool) -> Any:
        return _torchvision(
            lambda: cls(str(tv_root), train=train, download=download), shown, root / cls_name / "raw", layout, download
        )

    tr, te = make(True), make(False)
    classes = list(_DIGIT_CLASSES) if name == "mnist" else [str(c) for c in tr.classes]
    return _make_dataset(
        name,
        _images(tr.data, channels_last=False),
        _labels(tr.targets),
        _images(te.data, channels_last=False),
        _labels(te.targets),
        classes,
        val_fraction,
        seed,
    )


def _load_cifar10(root: Path, download: bool, val_fraction: float, seed: int) -> Dataset:
    npz_dir = root / "cifar10"
    if not (root / "cifar-10-batches-py").is_dir() and (npz_dir / "test.npz").is_file():
        train_files = sorted(npz_dir.glob("train-*.npz"))
        if train_files:
            xs, ys = zip(*(_read_npz(f) for f in train_files))
            x_te, y_te = _read_npz(npz_dir / "test.npz")
            _check_same_shape([*train_files, npz_dir / "test.npz"], [*xs, x_te])
            return _make_dataset(
                "cifar10",
                torch.cat([_images(x, channels_last=True) for x in xs]),
                _labels(np.concatenate(ys)),
                _images(x_te, channels_last=True),
                _labels(y_te),
                list(CIFAR10_CLASSES),
                val_fraction,
                seed,
            )
    from torchvision.datasets import CIFAR10

    layout = "cifar-10-batches-py/ (torchvision) or cifar10/train-*.npz + cifar10/test.npz (uint8 x N x 32 x 32 x 3, y)"

    def make(train: bool) -> Any:
        return _torchvision(lambda: CIFAR10(str(root), train=train, download=download), "CIFAR-10", root, layout, download)

    tr, te = make(True), make(False)
    return _make_dataset(
        "cifar10",
        _images(tr.data, channels_last=True),
        _labels(tr.targets),
        _images(te.data, channels_last=True),
        _labels(te.targets),
        list(tr.classes),
        val_fraction,
        seed,
    )


def _load_svhn(root: Path, download: bool, val_fraction: float, seed: int) -> Dataset:
    from torchvision.datasets import SVHN

    # torchvision keeps SVHN's .mat files directly in root; also accept a root/svhn subfolder.
    folder = root
    for sub in ("svhn", "SVHN"):
        if (root / sub / "train_32x32.mat").is_file():
            folder = root / sub
            break
    layout = "train_32x32.mat and test_32x32.mat (directly or under svhn/)"

    def make(split: str) -> Any:
        return _torchvision(lambda: SVHN(str(folder), split=split, download=download), "SVHN", root, layout, download)

    tr, te = make("train"), make("test")
    return _make_dataset(
        "svhn",
        _images(tr.data, channels_last=False),  # torchvision stores SVHN as N x 3 x 32 x 32
        _labels(tr.labels),
        _images(te.data, channels_last=False),
        _labels(te.labels),
        list(_DIGIT_CLASSES),
        val_fraction,
        seed,
    )


# --------------------------------------------------------------------------- npz


#: What np.load and NpzFile raise for a missing, truncated or corrupt archive or member.
_NPZ_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error)


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read and check one ``.npz`` file: ``x`` images (uint8 0..255, or floating-point in [0, 1]; N x H x W or
    N x H x W x C) and ``y`` labels (integer, >= 0, N). Never unpickles. Raises ``ValueError`` naming the file."""
    try:
        data = np.load(path, allow_pickle=False)
    except _NPZ_ERRORS as exc:  # not a zip, truncated, unreadable
        raise ValueError(f"{path}: not a readable .npz file ({_one_line(exc)})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: not an .npz archive (np.load returned {type(data).__name__})")
    with data:
        keys = set(data.files)
        if not {"x", "y"} <= keys:
            raise ValueError(f"{path}: expected arrays 'x' and 'y', found {sorted(keys)}")
        try:
            x, y = data["x"], data["y"]
        except _NPZ_ERRORS as exc:  # object arrays (pickles), truncated or corrupt members
            if "allow_pickle" in str(exc):
                raise ValueError(f"{path}: 'x' or 'y' is a pickled object array, which cas_edu never loads (it could "
                                 "run code); save plain numeric arrays") from None
            raise ValueError(f"{path}: cannot read 'x'/'y', the file is truncated or corrupt ({_one_line(exc)})") from None
    if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{path}: 'x' must be uint8 (0..255) or floating-point (0..1), got {x.dtype}")
    if x.ndim not in (3, 4):
        raise ValueError(f"{path}: 'x' must be N x H x W or N x H x W x C, got shape {x.shape}")
    if 0 in x.shape:
        raise ValueError(f"{path}: 'x' holds no images (shape {x.shape}); every .npz needs at least one")
    if x.ndim == 4 and x.shape[3] > 4 and x.shape[1] <= 4:
        raise ValueError(f"{path}: 'x' of shape {x.shape} looks channels-first (N x C x H x W); save it as "
                         "N x H x W x C, e.g. x.transpose(0, 2, 3, 1)")
    if x.dtype != np.uint8:
        if not np.isfinite(x).all():
            raise ValueError(f"{path}: 'x' holds NaN or infinite values; images must be finite, in [0, 1]")
        low, high = float(x.min()), float(x.max())
        if low < 0 or high > 1:
            raise ValueError(f"{path}: floating-point 'x' must lie in [0, 1], found {low:g} to {high:g} "
                             "(0..255 images: save them as uint8)")
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
        raise ValueError(f"{path}: 'y' must be a 1-D integer array of class indices, got {y.dtype} with shape "
                         f"{y.shape} (whole-number floats: y.astype(np.int64))")
    if len(x) != len(y):
        raise ValueError(f"{path}: 'x' has {len(x)} images but 'y' has {len(y)} labels")
    if int(y.min()) < 0:
        raise ValueError(f"{path}: labels must be non-negative class indices, found {int(y.min())}")
    return x, y


def _npz_classes(train_files: list[Path], train_y: list[np.ndarray], test_files: list[Path],
                 test_y: list[np.ndarray], classes_file: Path, source: Path) -> list[str]:
    """Class names of an npz dataset: ``classes.txt`` when present, else ``0..K-1`` with K inferred from the
    training labels, which must then use every index below their largest (at most :data:`MAX_CLASSES`).
    ``source`` is the path the dataset was given as (a folder or one file), named in errors about all its labels."""
    if classes_file.is_file():
        classes = [ln.strip() for ln in classes_file.read_text(encoding="utf-8").splitlines() if ln.strip()]
        if len(classes) < 2:
            raise ValueError(f"{classes_file}: lists {len(classes)} class name(s); a classifier needs at least 2")
        for f, y in zip(train_files + test_files, train_y + test_y):
            if int(y.max()) >= len(classes):
                raise ValueError(f"{f}: label {int(y.max())} has no name in {classes_file}, which lists "
                                 f"{len(classes)} class names (labels 0 to {len(classes) - 1})")
        return classes
    for f, y in zip(train_files + test_files, train_y + test_y):
        if int(y.max()) >= MAX_CLASSES:
            raise ValueError(f"{f}: label {int(y.max())} would make a {int(y.max()) + 1}-way classifier (at most "
                             f"{MAX_CLASSES} without classes.txt); labels must be class indices 0..K-1: remap ids "
                             "with np.unique(y, return_inverse=True), or name every class in classes.txt")
    seen = np.unique(np.concatenate(train_y))
    k = int(seen[-1]) + 1
    if k < 2:
        raise ValueError(f"{source}: the training labels hold a single class ({k - 1}); a classifier "
                         "needs at least 2")
    if len(seen) < k:
        absent = sorted(set(range(k)) - set(seen.tolist()))
        shown = ", ".join(map(str, absent[:5])) + (", ..." if len(absent) > 5 else "")
        raise ValueError(f"{source}: training labels go up to {k - 1} but {len(absent)} of the classes "
                         f"0..{k - 1} never occur ({shown}); labels must be class indices 0..K-1: remap them with "
                         "np.unique(y, return_inverse=True), or name every class in classes.txt")
    for f, y in zip(test_files, test_y):
        if int(y.max()) >= k:
            raise ValueError(f"{f}: label {int(y.max())} never occurs in the training files (classes 0..{k - 1})")
    return [str(i) for i in range(k)]


def _check_same_shape(files: list[Path], xs: list[np.ndarray]) -> None:
    def image_shape(x: np.ndarray) -> tuple[int, ...]:
        return tuple(x.shape[1:]) if x.ndim == 4 else (*x.shape[1:], 1)

    ref = image_shape(xs[0])
    for f, x in zip(files, xs):
        if image_shape(x) != ref:
            raise ValueError(f"{f}: image shape {image_shape(x)} differs from {files[0]}'s {ref}")


def _load_npz(spec: str, val_fraction: float, seed: int) -> Dataset:
    if not spec.strip():
        raise ValueError("npz: needs a path, e.g. 'npz:/data/my_images' (a folder of .npz files) or 'npz:file.npz'")
    path = Path(spec.strip()).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.glob("*.npz") if p.is_file())
        test_files = [p for p in files if p.name.startswith("test")]
        train_files = [p for p in files if not p.name.startswith("test")]
        classes_file = path / "classes.txt"
    elif path.is_file():
        train_files, test_files, classes_file = [path], [], path.with_name("classes.txt")
    else:
        raise FileNotFoundError(f"npz dataset not found: {path} is neither a folder of .npz files nor an .npz file.")
    if not train_files:
        raise FileNotFoundError(
            f"npz dataset: no training .npz files in {path} (need at least one *.npz not named test*.npz)."
        )
    train = [_read_npz(f) for f in train_files]
    test = [_read_npz(f) for f in test_files]
    _check_same_shape(train_files + test_files, [x for x, _ in train + test])
    classes = _npz_classes(train_files, [y for _, y in train], test_files, [y for _, y in test], classes_file, path)
    x_tr = torch.cat([_images(x, channels_last=True) for x, _ in train])
    y_tr = _labels(np.concatenate([y for _, y in train]))
    if test:
        x_te = torch.cat([_images(x, channels_last=True) for x, _ in test])
        y_te = _labels(np.concatenate([y for _, y in test]))
    else:
        rest, held = _stratified_split(y_tr, _TEST_FRACTION, _TEST_SPLIT_SEED)
        x_tr, y_tr, x_te, y_te = x_tr[rest], y_tr[rest], x_tr[held], y_tr[held]
    return _make_dataset(f"npz:{path}", x_tr, y_tr, x_te, y_te, classes, val_fraction, seed)


# --------------------------------------------------------------------------- entry point


def load(
    name: str,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    val_fraction: float = 0.1,
    seed: int = 0,
) -> Dataset:
    """Load dataset ``name`` (see DATASETS, or ``npz:PATH``) as float [0,1] N x C x H x W train/val/test splits.

    ``val_fraction`` of the training data (class-stratified, seeded by ``seed``) becomes the val split;
    with ``val_fraction=0`` the val split is empty (0 examples) and train keeps every training image.
    Shape: every split's x is (N, C, H, W) float32 in [0, 1] and y (N,) int64 (see :class:`Split`).
    Raises: ``ValueError`` for a fraction outside [0, 1), an unknown name, a ``root`` that is a file, or a corrupt
    or inconsistent npz file (named in the message); ``FileNotFoundError`` for missing data
    (:class:`DatasetNotFoundError` for a downloadable dataset); :class:`DownloadError` (an ``OSError``) when
    ``download=True`` and the download fails.
    """
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, numbers.Real) or not 0.0 <= float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must lie in [0, 1) (0: no validation split, the whole training set "
                         f"trains), got {val_fraction!r}")
    val_fraction = float(val_fraction)
    key = dataset_key(name)
    if key.startswith("npz:"):
        return _load_npz(key[4:], val_fraction, seed)
    if key == "digits":
        return _load_digits(val_fraction, seed)
    base = _resolve_root(root)
    if base.exists() and not base.is_dir():
        raise ValueError(f"data root {base} is a file, not a folder; pass the folder that holds the datasets")
    if key in ("mnist", "fashion_mnist"):
        return _load_idx_family(key, base, download, val_fraction, seed)
    if key == "cifar10":
        return _load_cifar10(base, download, val_fraction, seed)
    return _load_svhn(base, download, val_fraction, seed)
