"""The run folder on disk: what makes a run, who may write it, and where its evaluation reports go.

A run folder (``train --out RUN``) holds ``checkpoint.pt``, ``best.pt`` and ``history.json``, written by
one training at a time, and the reports of every evaluation under ``RUN/eval/``:

* **Lock.** A training holds ``RUN/.lock`` (:func:`locked`, a ``filelock`` lock: ``flock`` on Unix,
  released by the operating system when the process dies, even by SIGKILL). A second training into the
  same folder is refused at once with :class:`RunLockedError`. The empty ``.lock`` file stays after the
  run, on purpose: deleting a lock file that others may have opened breaks the lock.
* **No silent replacement.** Training into a folder that holds a run is refused with
  :class:`RunExistsError` unless it resumes the run or is told to replace it (:func:`check_can_start`);
  replacing deletes the old run's files and reports first (:func:`clear_run`), so no stale report stays
  beside a new model.
* **Leftovers.** A process killed while writing leaves ``.<name>.<random>.tmp`` files. They never count as
  a run or a report (:func:`run_contents`); the next training removes those of its own files once it holds
  the lock, and those in ``eval/`` that are over an hour old (:data:`STALE_REPORT_TMP_SECONDS`: an evaluation
  that is writing a report right now holds its temporary file for milliseconds) (:func:`remove_temporaries`).
* **Writable, really.** Before any work, a destination is tested by creating and deleting an empty
  temporary file in it (:func:`check_writable_folder`), not by permission bits, which ``root`` and special
  file systems such as ``/proc`` make meaningless.
* **Reports.** Every evaluation is kept: ``RUN/eval/<UTC time>-<attacks>-n<N>.json``, never overwritten
  (a counter is added when the name exists), and ``RUN/eval/latest.json``, a small JSON naming the newest
  (:func:`save_report`, :func:`latest_report`, :func:`saved_reports`). A report an older version wrote to
  ``RUN/eval.json`` is still found, as the oldest.

This is its own module because the layout is one concept shared by training, the command line, the
suite pipeline and the benchmarks; ``checkpoint`` knows single files, ``evaluation`` knows attacks. It imports
:mod:`cas_edu.checkpoint` (and :mod:`cas_edu.evaluation` lazily, to read a report back).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from filelock import FileLock, Timeout

from .checkpoint import TMP_SUFFIX, CheckpointWriteError, write_json

if TYPE_CHECKING:
    from .evaluation import EvaluationReport

LOCK_NAME = ".lock"
#: The files a training writes into its run folder.
RUN_FILES = ("checkpoint.pt", "best.pt", "history.json")
REPORTS_DIR = "eval"
LATEST = "latest.json"
#: Where versions before the ``eval/`` folder wrote the (single) report.
LEGACY_REPORT = "eval.json"
#: Age after which a temporary file in ``eval/`` is a leftover of a killed evaluation, not one being written.
STALE_REPORT_TMP_SECONDS = 3600


class RunFolderError(ValueError):
    """A run folder cannot be used as asked (reported by the command line as one line, exit code 2).

    Raises: nothing of its own (a ``ValueError`` subclass, raised by this module's checks).
    """


class RunExistsError(RunFolderError):
    """The folder already holds a run (or its reports) and was not asked to resume or replace it.

    Raises: nothing of its own (raised by :func:`check_can_start`).
    """


class RunLockedError(RunFolderError):
    """Another training holds the run folder's lock.

    Raises: nothing of its own (raised by :func:`locked` and :func:`check_unlocked`).
    """


def is_main_process() -> bool:
    """Whether this process writes run folders: always, except under ``torchrun`` on ranks other than 0
    (the ``WORLD_SIZE`` / ``RANK`` variables :mod:`cas_edu.distributed` reads; an initialised process group wins).

    Raises: ``ValueError`` when ``WORLD_SIZE`` or ``RANK`` is set but is not an integer.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("WORLD_SIZE", "1")) <= 1 or int(os.environ.get("RANK", "0")) == 0


def is_temporary(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a temporary file of the atomic writer (``.<name>.<random>.tmp``).

    Raises: nothing of its own.
    """
    name = Path(path).name
    return name.startswith(".") and name.endswith(TMP_SUFFIX)


def run_contents(folder: str | os.PathLike) -> list[str]:
    """The names of a run's files and reports present in ``folder`` (empty when it holds no run); temporary
    files (:func:`is_temporary`) left by a killed process do not count.

    Raises: nothing of its own (``OSError`` when ``eval/`` cannot be listed).
    """
    folder = Path(folder)
    names = [name for name in (*RUN_FILES, LEGACY_REPORT) if (folder / name).is_file()]
    if (folder / REPORTS_DIR).is_dir() and any(not is_temporary(p) for p in (folder / REPORTS_DIR).iterdir()):
        names.append(f"{REPORTS_DIR}/")
    return names


def check_can_start(folder: str | os.PathLike, resume: bool = False, overwrite: bool = False) -> None:
    """Refuse a training start that would lose something: without ``resume`` or ``overwrite`` a folder holding
    a run raises :class:`RunExistsError`; ``resume`` without ``checkpoint.pt`` raises ``FileNotFoundError``;
    both flags at once raise ``ValueError``. Changes nothing on disk (the lock is :func:`locked`'s job).

    Raises: :class:`RunExistsError`, ``FileNotFoundError`` or ``ValueError`` as above; :class:`RunFolderError` when
    ``folder`` is a file.
    """
    folder = Path(folder)
    if resume and overwrite:
        raise ValueError(f"--resume continues the run in {folder} and --overwrite replaces it; pass only one "
                         "(resume=True or overwrite=True in Python).")
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"{folder} is a file, not a run folder; choose another --out.")
    found = run_contents(folder)
    if resume:
        if not (folder / "checkpoint.pt").is_file():
            hint = (f" (it holds {', '.join(found)}: start again with --overwrite to replace them)" if found
                    else ". Start without --resume")
            raise FileNotFoundError(f"Nothing to resume: no checkpoint.pt in {folder}{hint}.")
        return
    if found and not overwrite:
        raise RunExistsError(
            f"{folder} already holds a run ({', '.join(found)}) and training would replace it: continue it with "
            "--resume, replace it with --overwrite (deletes those files first), or choose another --out "
            "(in Python: resume=True, overwrite=True or another out_dir).")


@contextlib.contextmanager
def locked(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold ``folder/.lock`` (creating the folder) for the duration of the ``with`` block; raise
    :class:`RunLockedError` at once when another training holds it. Re-entrant within one thread;
    a holder killed in any way (SIGKILL included) releases it.

    Raises: :class:`RunLockedError` as above; :class:`RunFolderError` when ``folder`` is a file; ``OSError`` when
    the folder cannot be created.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"{folder} is a file, not a run folder; choose another --out.")
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / LOCK_NAME, timeout=0, is_singleton=True)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        raise RunLockedError(f"another training holds {folder} ({folder / LOCK_NAME}); wait for it to finish, "
                             "or train into another --out.") from None
    try:
        yield folder
    finally:
        lock.release()


def check_unlocked(folder: str | os.PathLike) -> None:
    """Raise :class:`RunLockedError` when another training holds ``folder``'s lock; creates nothing (a folder
    without ``.lock`` is not locked). A check before the work, so that a training that would wait for nothing is
    refused first; :func:`locked` is what excludes others.

    Raises: :class:`RunLockedError` as above.
    """
    path = Path(folder) / LOCK_NAME
    if not path.is_file():
        return
    with locked(folder):
        pass


def remove_temporaries(folder: str | os.PathLike, now: float | None = None) -> list[Path]:
    """Delete the half-written ``.<name>.<random>.tmp`` files that killed processes left in ``folder``: those of
    the training's own files (:data:`RUN_FILES`), and in ``eval/`` those older than
    :data:`STALE_REPORT_TMP_SECONDS` (``now``: the current ``time.time()``; a younger one may belong to an
    evaluation writing its report right now). Call it while holding :func:`locked`. Returns what was removed.

    Raises: ``OSError`` when a run file's temporary cannot be deleted (those in ``eval/`` are skipped instead).
    """
    folder = Path(folder)
    now = time.time() if now is None else now
    removed = []
    for name in RUN_FILES:
        for path in folder.glob(f".{glob_escape(name)}.*{TMP_SUFFIX}"):
            if path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
    reports = folder / REPORTS_DIR
    for path in reports.glob(f".*{TMP_SUFFIX}") if reports.is_dir() else ():
        with contextlib.suppress(OSError):  # gone already, or not ours to delete: it does not count as a report
            if path.is_file() and now - path.stat().st_mtime > STALE_REPORT_TMP_SECONDS:
                path.unlink()
                removed.append(path)
    return removed


def glob_escape(text: str) -> str:
    """``text`` with glob metacharacters escaped.

    Raises: nothing of its own.
    """
    return re.sub(r"([*?\[])", r"[\1]", text)


def clear_run(folder: str | os.PathLike) -> list[str]:
    """Delete a run before it is replaced (``--overwrite``): its :data:`RUN_FILES`, the reports folder ``eval/``
    and a legacy ``eval.json``; other files in the folder are left alone. Call it while holding :func:`locked`.
    Returns the names removed.

    Raises: ``OSError`` when a file or ``eval/`` cannot be deleted.
    """
    folder = Path(folder)
    removed = run_contents(folder)
    for name in (*RUN_FILES, LEGACY_REPORT):
        (folder / name).unlink(missing_ok=True)
    if (folder / REPORTS_DIR).is_dir():
        shutil.rmtree(folder / REPORTS_DIR)
    return removed


# --------------------------------------------------------------------------- reports


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def write_problem(folder: str | os.PathLike) -> str | None:
    """Why no file can be created in the existing folder ``folder``, in a few words, or None when one can: an
    empty ``.cas_edu-write-check.<random>.tmp`` is created there and deleted at once. Permission bits are not
    enough: ``root`` passes every ``os.access`` check, also in ``/proc`` or on a read-only file system.

    Raises: nothing of its own (the reason is returned, not raised).
    """
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".cas_edu-write-check.", suffix=TMP_SUFFIX)
    except OSError as err:
        return err.strerror or str(err)
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)
    return None


def check_writable_folder(folder: str | os.PathLike) -> None:
    """Check that files can be created in ``folder`` (created if missing; the test file goes to its nearest
    existing parent then, :func:`write_problem`): checked before an evaluation runs its attacks, so that no
    report is computed only to be lost.

    Raises: ``ValueError`` when ``folder`` (or its nearest existing parent) is a file or cannot be written.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"cannot write reports into {folder}: it is a file, not a folder.")
    existing = _nearest_existing(folder.absolute())
    if not existing.is_dir():
        raise ValueError(f"cannot create {folder}: {existing} is a file, not a folder.")
    problem = write_problem(existing)
    if problem is not None:
        raise ValueError(f"cannot write into {existing} ({problem}); choose another destination.")


def check_report_destination(path: str | os.PathLike) -> None:
    """Check that a report can be written to ``path`` (``evaluate --output``).

    Raises: ``ValueError`` when ``path`` exists (reports are never replaced), is a folder, or its folder cannot be
    created or written.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"--output {path} is a folder; name a file, e.g. {path / 'report.json'}.")
    if path.exists() or path.is_symlink():
        raise ValueError(f"--output {path} already exists and reports are never replaced; choose another name "
                         "or delete it first.")
    check_writable_folder(path.parent)


def _report_dict(report: "EvaluationReport | dict[str, Any]") -> dict[str, Any]:
    return report if isinstance(report, dict) else report.to_dict()


def write_report(path: str | os.PathLike, report: "EvaluationReport | dict[str, Any]") -> Path:
    """Write a report as JSON to ``path`` atomically, never replacing a file. Returns ``path``.

    Raises: ``FileExistsError`` when ``path`` exists; :class:`cas_edu.checkpoint.CheckpointWriteError` when the
    write fails.
    """
    path = Path(path)
    write_json(path, _report_dict(report), replace=False)
    return path


def report_name(report: "EvaluationReport | dict[str, Any]", when: datetime | None = None) -> str:
    """``<UTC time>-<attacks>-n<N>.json``, e.g. ``20260130T142501Z-natural+pgd20-n200.json``.

    Raises: nothing of its own.
    """
    data = _report_dict(report)
    when = (when or datetime.now(timezone.utc)).astimezone(timezone.utc)
    attacks = "+".join(data.get("accuracy", {})) or "none"
    if len(attacks) > 80:
        attacks = f"{len(data['accuracy'])}attacks"
    return f"{when.strftime('%Y%m%dT%H%M%SZ')}-{attacks}-n{data.get('n_examples', 0)}.json"


def save_report(run_dir: str | os.PathLike, report: "EvaluationReport | dict[str, Any]") -> Path:
    """Keep ``report`` in ``run_dir/eval/`` under :func:`report_name` (``-2``, ``-3`` ... added when the name
    exists; nothing is ever overwritten) and point ``run_dir/eval/latest.json`` at it. Returns the report's path.

    Raises: ``ValueError`` when ``run_dir`` cannot hold reports and
    :class:`cas_edu.checkpoint.CheckpointWriteError` when a write fails (the earlier reports are intact; when
    only ``latest.json`` failed, the error's ``report_path`` names the report, which was kept).
    """
    folder = Path(run_dir) / REPORTS_DIR
    check_writable_folder(folder)
    data = _report_dict(report)
    stem = report_name(data)[:-len(".json")]
    for counter in range(1, 10_000):
        path = folder / (f"{stem}.json" if counter == 1 else f"{stem}-{counter}.json")
        try:
            write_report(path, data)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - ten thousand reports of one kind in one second
        raise RunFolderError(f"{folder} holds too many reports named {stem}*.json.")
    try:
        write_json(folder / LATEST, {"report": path.name, "attacks": list(data.get("accuracy", {})),
                                     "n_examples": data.get("n_examples"), "saved": datetime.now(timezone.utc).isoformat()})
    except CheckpointWriteError as err:  # the report itself is kept; only the pointer is stale
        failure = CheckpointWriteError(f"the report was saved to {path}, but {err}")
        failure.report_path = path
        raise failure from err
    return path


def _order(path: Path) -> tuple:
    """Sort key, oldest first: the name's UTC time, then the counter, then the modification time."""
    parts = path.stem.split("-")
    counter = int(parts[-1]) if len(parts) > 2 and parts[-1].isdigit() else 1
    with contextlib.suppress(OSError):
        return parts[0], counter, path.stat().st_mtime_ns
    return parts[0], counter, 0


def saved_reports(run_dir: str | os.PathLike) -> list[Path]:
    """Every report kept for ``run_dir``, newest first (a legacy ``eval.json`` last).

    Raises: nothing of its own.
    """
    folder = Path(run_dir) / REPORTS_DIR
    found = sorted((p for p in folder.glob("*.json") if p.name != LATEST and p.is_file()), key=_order, reverse=True) \
        if folder.is_dir() else []
    legacy = Path(run_dir) / LEGACY_REPORT
    return found + ([legacy] if legacy.is_file() else [])


def latest_report_path(run_dir: str | os.PathLike) -> Path | None:
    """The newest report of ``run_dir``: the one ``eval/latest.json`` names, else the newest kept; None without any.

    Raises: nothing of its own (an unreadable ``latest.json`` is ignored).
    """
    pointer = Path(run_dir) / REPORTS_DIR / LATEST
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        named = Path(run_dir) / REPORTS_DIR / Path(json.loads(pointer.read_text())["report"]).name
        if named.is_file():
            return named
    found = saved_reports(run_dir)
    return found[0] if found else None


def load_report(path: str | os.PathLike) -> "EvaluationReport":
    """Read a saved report (``EvaluationReport.from_dict``).

    Raises: ``ValueError`` when the file is not an evaluation report; ``OSError`` (e.g. ``FileNotFoundError``) when
    it cannot be read.
    """
    from .evaluation import EvaluationReport

    try:
        return EvaluationReport.from_dict(json.loads(Path(path).read_text()))
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not an evaluation report ({err.__class__.__name__}).") from err


def latest_report(run_dir: str | os.PathLike) -> "EvaluationReport | None":
    """The newest evaluation report of ``run_dir`` (:func:`latest_report_path`), or None when it has none.

    Raises: ``ValueError`` when that file is not an evaluation report (:func:`load_report`).
    """
    path = latest_report_path(run_dir)
    return load_report(path) if path is not None else None


__all__ = ["LATEST", "LEGACY_REPORT", "LOCK_NAME", "REPORTS_DIR", "RUN_FILES", "RunExistsError", "RunFolderError",
           "RunLockedError", "STALE_REPORT_TMP_SECONDS", "check_can_start", "check_report_destination",
           "check_unlocked", "check_writable_folder", "clear_run",
           "is_main_process", "is_temporary", "latest_report", "latest_report_path", "load_report", "locked",
           "remove_temporaries", "report_name", "run_contents", "save_report", "saved_reports", "write_problem",
           "write_report"]
