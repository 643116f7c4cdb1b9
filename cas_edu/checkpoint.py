"""Checkpoints: plain dicts of tensors and config, written atomically, read with ``weights_only=True``."""
from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from .models import CASClassifier, build
from .runtime import resolve_device

FORMAT = "cas_edu.checkpoint/1"


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` through a temporary file and a rename, so a crash never leaves half a file."""
    _atomic_write(Path(path), lambda handle: torch.save({"format": FORMAT, **payload}, handle))


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write JSON atomically."""
    _atomic_write(Path(path), lambda handle: handle.write(json.dumps(data, indent=2).encode()))


def checkpoint_file(path: str | os.PathLike) -> Path:
    """The file a run folder is loaded from: ``best.pt``, else ``checkpoint.pt``; a file path (or a folder
    holding neither) is returned unchanged."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.pt", "checkpoint.pt"):
            if (path / name).is_file():
                return path / name
    return path


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict safely (a run folder: :func:`checkpoint_file`); refuse files that need arbitrary
    pickled code."""
    path = checkpoint_file(path)
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}; train one with `python -m cas_edu train --out DIR`.")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower() or "unsupported global" in str(err).lower():
            raise ValueError(
                f"Refusing to load {path}: it needs arbitrary pickled code, which could run anything. "
                "Only load checkpoints written by cas_edu (tensors and plain config)."
            ) from err
        raise ValueError(f"{path} is not a readable PyTorch checkpoint (corrupt or another format).") from err
    except (RuntimeError, EOFError, KeyError, ValueError, OSError) as err:
        raise ValueError(f"{path} is not a readable PyTorch checkpoint ({err.__class__.__name__}).") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a cas_edu checkpoint (no '{FORMAT}' format tag).")
    return payload


def model_from_payload(payload: dict[str, Any]) -> CASClassifier:
    """Rebuild the model a checkpoint describes and load its weights."""
    spec = payload["model_spec"]
    model = build(spec["name"], num_classes=spec["num_classes"], in_channels=spec["in_channels"],
                  cas=bool(spec["cas_layers"]), cas_layers=spec["cas_layers"] or None)
    model.load_state_dict(payload["model_state"])
    return model


def model_spec(name: str, num_classes: int, in_channels: int, model: CASClassifier) -> dict[str, Any]:
    """The plain description ``model_from_payload`` needs to rebuild ``model``."""
    return {"name": name, "num_classes": num_classes, "in_channels": in_channels, "cas_layers": model.cas_layers}


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> CASClassifier:
    """Load a trained model (a run folder or a ``.pt`` file) in eval mode; ``forward(x)`` returns logits."""
    device = resolve_device(device)
    model = model_from_payload(read_checkpoint(path))
    return model.to(device).eval()
