"""The run folder (``--out``): its files, its lock, and the rotation of periodic checkpoints.

Layout::

    recipe.yaml          the resolved recipe
    metrics.jsonl        one JSON object per log step / validation
    checkpoints/iter-XXXXXXXX.pt   periodic checkpoints (the last ``train.keep_last`` kept)
    best.pt              the best validation score (the task's: F1, classify: mean balanced
                         accuracy) of the last stage (the final weights if there
                         is no validation split)
    loss.png, val_f1.png curves, written at the end (:mod:`partsup.training.display`;
                         classify: val_score.png)
    train.lock           present while a training holds the folder (see :func:`lock_run_folder`)

Only rank 0 writes. Checkpoints are written only when every weight is finite; rotation never
deletes the newest readable checkpoint; :meth:`RunDir.latest` says which unreadable checkpoint
it skipped. A new run (no ``--resume``) starts only in a new or empty folder
(:func:`check_new_run`): a folder of the user's, a finished run's ``best.pt`` or a run stopped
before its first checkpoint is never trained over.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any, Iterator

from partsup.checkpoint.files import load_checkpoint, save_checkpoint
from partsup.errors import CheckpointError, PartsupError
from partsup.output.atomic import write_text
from partsup.training.step import NonFiniteLoss, non_finite

CHECKPOINT_RE = re.compile(r"^iter-(\d{8})\.pt$")


class CheckpointWarning(UserWarning):
    """``--resume`` skipped an unreadable checkpoint (the message names it and why)."""


class RunDir:
    """Files of one run. Every write error is a one-line :class:`PartsupError`."""

    def __init__(self, root: str | Path, keep_last: int = 2) -> None:
        self.root = Path(root)
        self.keep_last = max(1, int(keep_last))

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def best(self) -> Path:
        return self.root / "best.pt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    def checkpoint_path(self, iteration: int) -> Path:
        return self.checkpoints / f"iter-{iteration:08d}.pt"

    def existing(self) -> list[tuple[int, Path]]:
        """Periodic checkpoints, oldest first."""
        if not self.checkpoints.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.checkpoints.iterdir()
                 if (m := CHECKPOINT_RE.match(p.name))]
        return sorted(found)

    def prepare(self, recipe: dict[str, Any]) -> None:
        """Create the folder and write the resolved recipe (proves the folder is writable)."""
        from partsup.recipe import save_resolved
        try:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            save_resolved(recipe, self.root)
        except OSError as exc:
            raise PartsupError(f"cannot write to the output folder {self.root}: "
                               f"{exc.strerror or exc}") from exc

    def log(self, record: dict[str, Any]) -> None:
        """Append one record (a JSON line) to ``metrics.jsonl``."""
        try:
            with self.metrics.open("a") as fh:
                fh.write(json.dumps(record) + "\n")
        except OSError as exc:
            raise PartsupError(f"cannot write {self.metrics}: {exc.strerror or exc}") from exc

    def records(self) -> list[dict[str, Any]]:
        """The records of ``metrics.jsonl`` (a line cut short by a kill is skipped)."""
        if not self.metrics.is_file():
            return []
        out = []
        for line in self.metrics.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
        return out

    def truncate_log(self, iteration: int) -> None:
        """Drop records after ``iteration`` (written by a run that was then killed)."""
        kept = [r for r in self.records() if int(r.get("iteration", 0)) <= iteration]
        write_text(self.metrics, "".join(json.dumps(r) + "\n" for r in kept))

    def save(self, iteration: int, payload: dict[str, Any]) -> Path:
        """Write a periodic checkpoint (only when its weights are finite, else
        :class:`NonFiniteLoss`), then delete the older ones beyond the last ``keep_last``.

        Only checkpoints older than the one just written are deleted, so the newest readable
        checkpoint is never rotated away (not even by an unreadable file with a later number).
        """
        check_finite(payload["model"], iteration, self)
        path = save_checkpoint(self.checkpoint_path(iteration), payload)
        older = [p for i, p in self.existing() if i < iteration]
        for old in older[:max(0, len(older) - (self.keep_last - 1))]:
            with contextlib.suppress(OSError):
                old.unlink()
        return path

    def last_good(self) -> str:
        """Where a stopped run can be continued from, in words."""
        last = self.existing()
        return f"the last good checkpoint is {last[-1][1]}" if last else \
            "no checkpoint was written yet"

    def latest(self) -> dict[str, Any] | None:
        """The newest readable periodic checkpoint, or None. Each newer, unreadable one is
        skipped with a :class:`CheckpointWarning` naming the file and why."""
        errors = []
        for _, path in reversed(self.existing()):
            try:
                ckpt = load_checkpoint(path)
            except CheckpointError as exc:
                errors.append(str(exc))
                continue
            for text in errors:
                warnings.warn(f"--resume: skipped an unreadable checkpoint: {text}; resuming "
                              f"from {path}", CheckpointWarning, stacklevel=2)
            return ckpt
        if errors:
            raise CheckpointError(f"no readable checkpoint in {self.checkpoints}: {errors[0]}")
        return None


def check_finite(state: dict[str, Any], iteration: int, run_dir: RunDir) -> None:
    """Raise :class:`NonFiniteLoss` when a weight of ``state`` is NaN/inf (at ``iteration``)."""
    bad = non_finite(state)
    if bad:
        raise NonFiniteLoss(f"iteration {iteration}: the weights are not finite (NaN/inf in "
                            f"{len(bad)} tensor(s), e.g. {', '.join(bad[:3])}); training "
                            f"stopped, {run_dir.last_good()}. Lower train.optimizer.lr or set "
                            f"train.grad_clip")


#: the lock file, the only entry a folder may hold (beside an empty ``checkpoints/``) for a
#: new run to start in it
LOCK = "train.lock"


def check_new_run(root: Path) -> None:
    """Refuse to start a new run (no ``--resume``) in ``root`` unless it is absent or empty
    (the lock file and an empty ``checkpoints/`` aside): training writes ``recipe.yaml``,
    ``best.pt``, ``loss.png``, ... and appends to ``metrics.jsonl``, so it never starts over a
    folder it did not create, nor over a finished or stopped run.

    Raises:
        PartsupError: one line naming the folder, what it holds, and what to do instead.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise PartsupError(f"--out {root} is a file, not a folder; choose a folder")
    if not root.is_dir():
        return
    run = RunDir(root)
    if run.existing():
        raise PartsupError(f"{root} already holds checkpoints; continue it with --resume, or "
                           f"choose another --out")
    try:
        names = sorted(p.name for p in root.iterdir() if p.name != LOCK and not (
            p.name == "checkpoints" and p.is_dir() and not any(p.iterdir())))
    except OSError as exc:
        raise PartsupError(f"cannot read the output folder {root}: {exc.strerror or exc}"
                           ) from exc
    if not names:
        return
    if "best.pt" in names:
        raise PartsupError(f"{root} holds best.pt but no checkpoint to resume from (a finished "
                           f"model, or a file of yours); partsup train never trains over it: "
                           f"choose another --out")
    if {"recipe.yaml", "metrics.jsonl"} <= set(names):
        raise PartsupError(f"{root} holds a run that stopped before its first checkpoint "
                           f"(recipe.yaml, metrics.jsonl, no checkpoint: nothing to resume); "
                           f"partsup train does not start over it: choose another --out (or "
                           f"remove that folder yourself)")
    more = f" and {len(names) - 1} more" if len(names) > 1 else ""
    raise PartsupError(f"{root} is not empty (it holds {names[0]!r}{more}) and is not a run to "
                       f"resume; partsup train starts a new run only in a new or empty folder, "
                       f"so that it never replaces files it did not write: choose another --out")


@contextlib.contextmanager
def lock_run_folder(root: Path, enabled: bool = True, new_run: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on the run folder ``root`` (created if needed) while the body runs.

    The lock is ``fcntl.flock`` on ``root/train.lock``, which holds the holder's PID; the
    operating system releases it when the process exits, however it exits. A second holder is
    refused at once with a :class:`PartsupError` naming that PID. With ``new_run`` (a start
    without ``--resume``) the locked folder must then be new or empty (:func:`check_new_run`).
    A folder created here and still empty at the end (a failed start) is removed again.
    """
    if not enabled:
        yield
        return
    path = Path(root) / LOCK
    if Path(root).exists() and not Path(root).is_dir():
        raise PartsupError(f"--out {root} is a file, not a folder; choose a folder")
    created = not Path(root).exists()
    try:
        Path(root).mkdir(parents=True, exist_ok=True)
        fd = _acquire(path, root)
    except OSError as exc:
        raise PartsupError(f"cannot write to the output folder {root}: "
                           f"{exc.strerror or exc}") from exc
    try:
        if new_run:
            check_new_run(Path(root))
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # before unlocking: a waiting process then locks a fresh file
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                Path(root).rmdir()  # a failed start: the folder it made is still empty


def _acquire(path: Path, root: Path) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = _holder(path)
            raise PartsupError(f"{root} is in use by another training (PID {holder}); wait for "
                               f"it to end (or stop it), or choose another --out") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:  # not a file its previous holder removed as we opened it
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)


def _holder(path: Path) -> str:
    with contextlib.suppress(OSError, IndexError):
        return path.read_text().split()[0]
    return "unknown"


def training_holder(root: Path) -> str | None:
    """The PID (text) of a training that holds the run folder ``root``'s lock now, else None.

    Probes ``root/train.lock`` with a non-blocking shared ``flock``, released at once; a
    folder without a lock file is not in use. Commands that read a run's ``best.pt`` and write
    to it (``partsup calibrate``) refuse while a training holds it."""
    path = Path(root) / LOCK
    if not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        return _holder(path)
    finally:
        os.close(fd)  # closing releases the probe's shared lock
    return None
