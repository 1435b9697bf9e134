"""Checkpoints: ``tf.train.Checkpoint`` + ``CheckpointManager`` under
``<model_dir>/checkpoints``, files named ``ckpt-<global step>``; and the run
folder's lock.

Problems with checkpoints surface as ``CheckpointError`` with one line that
names the checkpoint and what is wrong. Nothing here deletes a checkpoint
except the manager's own ``--keep_checkpoints`` rotation: an unreadable one is
skipped (and, when training continues, moved aside into ``corrupt/``). Nothing
non-finite is saved: every save first checks the model (``check_finite_model``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import json
import os
import re
import shutil
import socket

import numpy as np
import tensorflow as tf
from absl import logging

from trainer.errors import NonFiniteError, UsageError, one_line
from trainer.files import exclusive_lock, is_regular_file, write_atomically


class CheckpointError(UsageError):
    """A checkpoint that cannot be used, with the reason in one line."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint whose files cannot be read."""


def checkpoint_dir(model_dir: str) -> str:
    return os.path.join(model_dir, "checkpoints")


def step_of(prefix: str) -> int:
    """The step of a ``ckpt-<step>`` or ``best-<step>`` prefix (-1 for another name)."""
    match = re.search(r"(?:ckpt|best)-(\d+)$", prefix)
    return int(match.group(1)) if match else -1


class Checkpoints:
    """Saves and restores the objects of a run.

    Args:
      directory: ``<model_dir>/checkpoints``.
      keep: how many checkpoints the manager keeps.
      scratch_directory: for a non-chief worker of a multi-worker run. Saving
        is a collective every worker must join, but only the chief's files
        count: this process saves into ``scratch_directory`` instead, which is
        removed again right after each save. Restores still read ``directory``
        (the chief's), so every worker resumes from the same checkpoint.
      check: ``check(step)`` runs before every save (rolling or best) and raises
        to refuse it (``check_finite_model``); None: no check.
      identity: the settings that make the run what it is (``{name: JSON value}``),
        saved in every checkpoint and compared on every restore, so that a
        hand-edited config.json cannot change the network under its weights.
      objects: what to save, e.g. ``model=..., optimizer=..., global_step=...``.
    """

    def __init__(
        self,
        directory: str,
        keep: int = 3,
        scratch_directory: str | None = None,
        check=None,
        identity: dict | None = None,
        **objects,
    ):
        self.directory = directory
        self.identity = identity
        self._check = check
        self.scratch_directory = scratch_directory
        self.remove_scratch()  # left over if this worker died while saving
        self.objects = objects
        self._keep = keep
        self._current_step: int | None = None
        # Saved with the objects; a restore reads the objects alone (older
        # checkpoints hold no identity) and compares the identity itself.
        extra = {"identity": _Identity(identity)} if identity is not None else {}
        self.checkpoint = tf.train.Checkpoint(**objects, **extra)
        try:
            self.manager = tf.train.CheckpointManager(
                self.checkpoint,
                scratch_directory or directory,
                max_to_keep=1 if scratch_directory else keep,
                checkpoint_name="ckpt",
            )
        except ValueError as error:  # a state file naming no checkpoint (e.g. empty)
            state = os.path.join(scratch_directory or directory, "checkpoint")
            raise CheckpointError(
                f"{state}: unreadable checkpoint state ({one_line(error)}); remove that file "
                "and run again (the checkpoints are found without it); nothing was changed"
            ) from None
        # What the chief's manager calls its latest at start, for a scratch saver.
        self._chief_latest = tf.train.latest_checkpoint(directory) if scratch_directory else None

    def candidates(self) -> list[str]:
        """Checkpoint prefixes on disk, newest first.

        Read from the files themselves as well as from the manager's state
        file, so a damaged state file never hides a checkpoint.
        """
        prefixes = set() if self.scratch_directory else set(self.manager.checkpoints)
        for index in glob.glob(os.path.join(glob.escape(self.directory), "ckpt-*.index")):
            prefixes.add(index[: -len(".index")])
        return sorted(prefixes, key=step_of, reverse=True)

    @property
    def latest(self) -> str | None:
        """The newest checkpoint of the run (for a scratch saver: the chief's copy)."""
        latest = self.manager.latest_checkpoint
        if not self.scratch_directory:
            return latest
        if not latest:
            return self._chief_latest
        return os.path.join(self.directory, os.path.basename(latest))

    @property
    def latest_step(self) -> int | None:
        """The step of the checkpoint this process restored or saved last (None if none)."""
        return self._current_step

    @contextlib.contextmanager
    def _saving(self, directory: str, what: str, kept: str):
        """Around a save: its errors become one ``CheckpointError`` naming
        ``directory`` and ``what``, and the scratch folder goes either way."""
        try:
            yield
        except (OSError, tf.errors.OpError) as error:
            raise CheckpointError(
                f"{directory}: cannot save {what} ({one_line(error)}); {kept}"
            ) from None
        finally:
            self.remove_scratch()

    def save(self, step: int) -> str:
        """Writes ``ckpt-<step>``; raises ``CheckpointError`` if it cannot."""
        if self._check is not None:
            self._check(step)
        directory = self.scratch_directory or self.directory
        what = f"the checkpoint of step {step}"
        with self._saving(directory, what, "earlier checkpoints are untouched"):
            if self.scratch_directory:
                os.makedirs(self.scratch_directory, exist_ok=True)
            else:
                _refuse_links(self.directory, ("checkpoint", f"ckpt-{step}.*"))
            path = self.manager.save(checkpoint_number=step)
        self._current_step = step
        if self.scratch_directory:
            logging.info("joined the save of checkpoint %s (the chief writes it)", self.latest)
            return self.latest
        logging.info("saved checkpoint %s", path)
        return path

    @property
    def best_directory(self) -> str:
        """``checkpoints/best``: the best checkpoint, apart from the rolling ones."""
        return os.path.join(self.directory, "best")

    def save_best(self, step: int) -> str:
        """Writes the current state as ``best/best-<step>``, replacing the previous
        best (``--keep_checkpoints`` rotation never touches it).

        Raises:
          CheckpointError: it cannot be written (the earlier best stays).
        """
        if self._check is not None:
            self._check(step)
        directory = (
            os.path.join(self.scratch_directory, "best")
            if self.scratch_directory
            else self.best_directory
        )
        what = f"the best checkpoint of step {step}"
        with self._saving(directory, what, "the earlier best is untouched"):
            if os.path.islink(directory):  # its files could be another run's
                raise OSError(
                    errno.ELOOP, f"{directory} is a symbolic link; refusing to write through it"
                )
            os.makedirs(directory, exist_ok=True)
            if not self.scratch_directory:
                _refuse_links(directory, ("checkpoint", f"best-{step}.*"))
            manager = tf.train.CheckpointManager(
                self.checkpoint, directory, max_to_keep=1, checkpoint_name="best"
            )
            path = manager.save(checkpoint_number=step)
        return path

    @property
    def best(self) -> str | None:
        """The best checkpoint's prefix, or None; found from its files when the
        folder's state file is missing or names none."""
        named = tf.train.latest_checkpoint(self.best_directory)
        if named:
            return named
        pattern = os.path.join(glob.escape(self.best_directory), "best-*.index")
        found = sorted((p[: -len(".index")] for p in glob.glob(pattern)), key=step_of)
        return found[-1] if found else None

    def remove_scratch(self) -> None:
        """Deletes the scratch folder of a non-chief worker, if there is one."""
        if self.scratch_directory:
            shutil.rmtree(self.scratch_directory, ignore_errors=True)

    @staticmethod
    def verify(path: str) -> dict[str, tuple]:
        """Reads every tensor of checkpoint ``path``, checking each one's checksum.

        Nothing is restored: a checkpoint is read into the run's variables
        only once it has passed this check, so a damaged file never leaves
        half-restored variables or deferred restorations behind.

        Returns:
          ``{checkpoint key: shape}`` of the variables it holds.

        Raises:
          CorruptCheckpointError: a file is missing, truncated or damaged.
        """
        for part in [path + ".index", *glob.glob(glob.escape(path) + ".data-*")]:
            if os.path.lexists(part) and not is_regular_file(part):  # a FIFO would block
                raise CorruptCheckpointError(f"{part}: not a regular file")
        try:
            reader = tf.train.load_checkpoint(path)
            shapes = reader.get_variable_to_shape_map()
            for key in shapes:
                reader.get_tensor(key)
        except (tf.errors.OpError, ValueError, IndexError, EOFError, OSError) as error:
            raise CorruptCheckpointError(f"{path}: unreadable ({one_line(error)})") from None
        if not shapes:
            raise CorruptCheckpointError(f"{path}: unreadable (holds no variables)")
        return {key: tuple(shape) for key, shape in shapes.items()}

    def _check_record(self, path: str, step: int | None) -> None:
        """Refuses checkpoint ``path`` if it was written with other identity settings
        than this run's (a checkpoint without a record of them passes), or, given
        ``step``, if it holds another global step."""
        reader = tf.train.load_checkpoint(path)
        key = "global_step/.ATTRIBUTES/VARIABLE_VALUE"
        if step is not None:
            stored_step = int(reader.get_tensor(key)) if reader.has_tensor(key) else None
            if stored_step != step:
                raise CheckpointError(f"{path}: holds the weights of step {stored_step}")
        key = "identity/.ATTRIBUTES/py_state"
        if self.identity is None or not reader.has_tensor(key):
            return
        try:
            stored = json.loads(reader.get_tensor(key))
        except (ValueError, TypeError):
            raise CorruptCheckpointError(f"{path}: unreadable record of its settings") from None
        for name, value in self.identity.items():
            if name in stored and stored[name] != value:
                raise CheckpointError(
                    f"{path}: written with {name}={json.dumps(stored[name])}, and this run "
                    f"says {name}={json.dumps(value)} (the flags, or an edited or missing "
                    "config.json); the run must keep it to resume: put it back, or use a new "
                    "--model_dir"
                )

    def restore(self, path: str, only: dict | None = None, step: int | None = None) -> None:
        """Restores ``path`` into all objects, or into just ``only`` (e.g. the model);
        with ``step``, only if it holds that global step.

        The files are verified first (``verify``), then read through a fresh
        ``tf.train.Checkpoint`` object, so nothing of an earlier failed attempt
        can interfere. With ``only``, the rest of the checkpoint (optimizer
        slots, ...) is deliberately left unread, without warnings.

        Raises:
          CorruptCheckpointError: the files cannot be read.
          CheckpointError: they hold other variables or shapes than this run, were
            written with other identity settings, or hold another step than ``step``.
        """
        self.verify(path)
        self._check_record(path, step)
        try:
            if only is None:
                tf.train.Checkpoint(**self.objects).restore(path).assert_existing_objects_matched()
            else:
                tf.train.Checkpoint(**only).restore(path).expect_partial()
        except (tf.errors.OpError, IndexError, EOFError) as error:
            raise CorruptCheckpointError(f"{path}: unreadable ({one_line(error)})") from None
        except (ValueError, AssertionError) as error:
            raise CheckpointError(
                f"{path}: does not fit this model ({one_line(error)}); was it written with "
                "another --model/--hidden? Use a new --model_dir"
            ) from None
        logging.info("restored %s", path)

    def restore_latest(self, only: dict | None = None, move_corrupt: bool = False) -> str | None:
        """Restores the newest readable checkpoint; returns its path (None if none).

        An unreadable checkpoint is skipped with a warning, and with
        ``move_corrupt`` its files are moved into ``checkpoints/corrupt/`` and
        the manager's state file is rewritten to name only what is left, so
        the run saves that step again; nothing is deleted.
        """
        candidates = self.candidates()
        if not candidates:
            return None
        moved = False
        for path in candidates:
            try:
                self.restore(path, only)
            except CorruptCheckpointError as error:
                logging.warning("%s; falling back to the previous checkpoint", error)
                if move_corrupt:
                    self._move_aside(path)
                    moved = True
                continue
            self._current_step = step_of(path)
            if moved or (move_corrupt and self.manager.latest_checkpoint != path):
                self._reset_state(path)
            return path
        raise CheckpointError(
            f"{self.directory}: no readable checkpoint left "
            f"(tried {', '.join(os.path.basename(p) for p in candidates)}); nothing was deleted"
        )

    def _reset_state(self, restored: str) -> None:
        """Rewrites the ``checkpoint`` state file to the checkpoints left on disk,
        ``restored`` the latest, and starts a new manager from it."""
        if self.scratch_directory:
            return
        kept = [
            p
            for p in reversed(self.candidates())
            if step_of(p) <= step_of(restored) and os.path.exists(p + ".index")
        ]
        lines = [f'model_checkpoint_path: "{os.path.basename(restored)}"']
        lines += [f'all_model_checkpoint_paths: "{os.path.basename(p)}"' for p in kept]
        state = os.path.join(self.directory, "checkpoint")
        try:
            write_atomically(state, "\n".join(lines) + "\n")
        except OSError as error:
            raise CheckpointError(f"{state}: cannot rewrite ({one_line(error)})") from None
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, self.directory, max_to_keep=self._keep, checkpoint_name="ckpt"
        )
        logging.info("checkpoint state now names %s as the latest", os.path.basename(restored))

    def _move_aside(self, path: str) -> None:
        target = os.path.join(self.directory, "corrupt")
        os.makedirs(target, exist_ok=True)
        for name in glob.glob(glob.escape(path) + ".*"):
            destination = os.path.join(target, os.path.basename(name))
            copy = 1
            while os.path.lexists(destination):  # an earlier corrupt copy of that step
                destination = os.path.join(target, f"{os.path.basename(name)}.{copy}")
                copy += 1
            os.rename(name, destination)
        logging.warning("moved the files of %s into %s", os.path.basename(path), target)


class _Identity(tf.train.experimental.PythonState):
    """A run's identity settings as JSON in its checkpoints."""

    def __init__(self, values: dict):
        self.values = values

    def serialize(self) -> str:
        return json.dumps(self.values, sort_keys=True)

    def deserialize(self, string_value) -> None:  # compared by _check_identity instead
        pass


def _refuse_links(directory: str, patterns) -> None:
    """Raises ``OSError`` if a file matching ``patterns`` in ``directory`` is a symbolic link."""
    for pattern in patterns:
        for path in glob.glob(os.path.join(glob.escape(directory), pattern)):
            if not os.path.islink(path):
                continue
            raise OSError(errno.ELOOP, f"{path} is a symbolic link; refusing to write through it")


class RunLock:
    """An exclusive lock on a run folder for one training process.

    Uses ``flock`` on ``<model_dir>/.lock``: the kernel drops the lock when the
    process ends, however it ends, so a crashed run never leaves it stuck.
    """

    def __init__(self, model_dir: str):
        self.path = os.path.join(model_dir, ".lock")
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        folder = os.path.dirname(self.path)
        self._fd = exclusive_lock(
            self.path,
            busy=lambda holder: (
                f"--model_dir={folder}: another training process ({holder}) is using this "
                "run folder; wait for it or pick another folder"
            ),
            record=f"pid {os.getpid()} on {socket.gethostname()}",
            hint="remove it and run again",
        )
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def check_finite_model(model, when: str, latest: str | None = None, sample=None) -> None:
    """Raises ``NonFiniteError`` if ``model`` is broken: a weight is NaN or Inf, or
    (given ``sample``, raw features ``[n, *input_shape]``) its outputs on those
    examples are.

    Such a model is never checkpointed or exported. Finite weights can still
    give non-finite outputs when training diverged (weights near 1e36 overflow
    the logits), hence the forward pass on a few training examples.
    """
    for variable in model.variables:  # BatchNorm's moving averages too
        if not np.all(np.isfinite(variable.numpy())):
            raise NonFiniteError(
                f"variable {variable.name.split(':')[0]} holds NaN/Inf at {when}; nothing was "
                f"saved or exported (last good checkpoint: {latest or 'none'})"
            )
    if sample is None or not len(sample):
        return
    outputs = model(np.asarray(sample[:256], np.float32)).numpy()
    if not np.all(np.isfinite(outputs)):
        largest = max(float(np.max(np.abs(v.numpy()))) for v in model.trainable_variables)
        raise NonFiniteError(
            f"the model's outputs are NaN/Inf at {when} (weights up to {largest:.3g} in "
            f"magnitude: training diverged); nothing was saved or exported (last good "
            f"checkpoint: {latest or 'none'}); lower --learning_rate or set --clip_norm"
        )
