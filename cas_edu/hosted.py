"""The notebooks on a hosted service (Google Colab): the library half of their set-up cell, and Drive checkpoints.

Every notebook has a set-up cell before its config cell, written by ``make links`` (``tools/launch_links.py``). On
Colab it installs cas_edu when it is missing and calls :func:`set_up_colab`; anywhere else it does nothing. Notebook
04's runs can live on Google Drive (:func:`runs_dir`), so that a session that disconnects resumes its training
(``training.train_or_load`` continues a run with the same config).

Nothing here touches the network or the disk away from Colab: locally the notebooks never download.

Imports: data (at call time, on Colab only).
"""
from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

#: The module whose presence means the kernel runs on Google Colab.
COLAB_MODULE = "google.colab"
#: Where the set-up cell fetches datasets on Colab, unless ``CAS_EDU_DATA`` names another folder.
COLAB_DATA_ROOT = Path("/content/data")
#: Google Drive's own folder once mounted with ``drive.mount("/content/drive")``.
DRIVE_ROOT = Path("/content/drive/MyDrive")
#: The runs folder on Drive, relative to :data:`DRIVE_ROOT`.
DRIVE_RUNS = Path("cas_edu") / "runs"
#: Datasets the set-up cell can fetch (torchvision downloads them); digits ships with scikit-learn.
DOWNLOADABLE: tuple[str, ...] = ("mnist", "fashion_mnist", "cifar10", "svhn")


def on_colab() -> bool:
    """Whether this Python process is a Google Colab kernel (``google.colab`` is imported there at start-up).

    Raises: nothing of its own.
    """
    return COLAB_MODULE in sys.modules


@dataclass(frozen=True)
class ColabSetUp:
    """What :func:`set_up_colab` did on Colab: the profile the notebooks read, the data folder, the datasets fetched.

    Raises: nothing of its own (a frozen dataclass).
    """

    profile: str
    data_root: Path
    datasets: tuple[str, ...]


def set_up_colab(datasets: Iterable[str] = ()) -> ColabSetUp | None:
    """Prepare a Colab kernel for a notebook; do nothing (return None) anywhere else.

    On Colab: sets ``CAS_EDU_PROFILE=colab`` unless it is set, enables Colab's custom widget manager (the
    explorers are ipywidgets), and downloads each of ``datasets`` with torchvision into ``$CAS_EDU_DATA``, which
    becomes :data:`COLAB_DATA_ROOT` unless it is set. Call it before the notebook's config cell, which reads both
    variables.

    Raises: ``ValueError`` for a dataset not in :data:`DOWNLOADABLE` (checked everywhere, so a typo shows locally
    too); on Colab, :class:`cas_edu.data.DownloadError` when a download fails.
    """
    names = tuple(datasets) if not isinstance(datasets, str) else (datasets,)
    unknown = [name for name in names if name not in DOWNLOADABLE]
    if unknown:
        raise ValueError(f"set_up_colab cannot fetch {', '.join(map(repr, unknown))}; pass datasets from "
                         f"{', '.join(DOWNLOADABLE)} (digits ships with scikit-learn and needs no download).")
    if not on_colab():
        return None
    from . import data

    # Colab's own module, present only there: imported by name so that it never reads as a dependency of cas_edu.
    output = importlib.import_module(f"{COLAB_MODULE}.output")

    profile = os.environ.setdefault("CAS_EDU_PROFILE", "colab")
    output.enable_custom_widget_manager()
    data_root = Path(os.environ.setdefault("CAS_EDU_DATA", str(COLAB_DATA_ROOT)))
    for name in names:
        data.load(name, root=data_root, download=True)
    fetched = f"; {', '.join(names)} in {data_root}" if names else ""
    print(f"Colab: profile {profile}, widgets on{fetched}")
    return ColabSetUp(profile, data_root, names)


def runs_dir(default: str | os.PathLike[str] = "runs") -> str:
    """The folder for the notebooks' training runs: on Google Drive when Colab has Drive mounted, else ``default``.

    On Colab with :data:`DRIVE_ROOT` present (``from google.colab import drive; drive.mount("/content/drive")``)
    it is ``/content/drive/MyDrive/cas_edu/runs``: checkpoints outlive the session, and rerunning the notebook in a
    new one resumes each unfinished run. Creates nothing (training creates its run folder).

    Raises: nothing of its own.
    """
    if on_colab() and DRIVE_ROOT.is_dir():
        return str(DRIVE_ROOT / DRIVE_RUNS)
    return os.fspath(default)
