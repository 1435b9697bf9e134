"""Checkpoints: ``tf.train.Checkpoint`` + ``CheckpointManager`` under
``<model_dir>/checkpoints``, files named ``ckpt-<global step>``.

Problems with checkpoints surface as ``CheckpointError`` with one line that
names the checkpoint and what is wrong; nothing here deletes a checkpoint
except the manager's own ``--keep_checkpoints`` rotation.
"""

from __future__ import annotations

import os

import tensorflow as tf
from absl import logging

from trainer.config import UsageError


class CheckpointError(UsageError):
    """A checkpoint that cannot be used, with the reason in one line."""


def _one_line(error: Exception) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 400 else text[:397] + "..."


class Checkpoints:
    """Saves and restores the objects of a run.

    Args:
      directory: ``<model_dir>/checkpoints``.
      keep: how many checkpoints the manager keeps.
      objects: what to save, e.g. ``model=..., optimizer=..., global_step=...``.
    """

    def __init__(self, directory: str, keep: int = 3, **objects):
        self.directory = directory
        self.objects = objects
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, directory, max_to_keep=keep, checkpoint_name="ckpt"
        )

    @property
    def latest(self) -> str | None:
        return self.manager.latest_checkpoint

    def save(self, step: int) -> str:
        """Writes ``ckpt-<step>``; raises ``CheckpointError`` if it cannot."""
        try:
            path = self.manager.save(checkpoint_number=step)
        except (OSError, tf.errors.OpError) as error:
            raise CheckpointError(
                f"{self.directory}: cannot save checkpoint at step {step}: {_one_line(error)}"
            ) from None
        logging.info("saved checkpoint %s", path)
        return path

    def restore(self, path: str, only: dict | None = None) -> None:
        """Restores ``path`` into all objects, or into just ``only`` (e.g. the model).

        With ``only``, the rest of the checkpoint (optimizer slots, ...) is
        deliberately left unread, without warnings.
        """
        try:
            if only is None:
                status = self.checkpoint.restore(path)
                status.assert_existing_objects_matched()
            else:
                tf.train.Checkpoint(**only).restore(path).expect_partial()
        except (ValueError, AssertionError, tf.errors.OpError) as error:
            raise CheckpointError(f"{path}: cannot restore: {_one_line(error)}") from None
        logging.info("restored %s", path)

    def restore_latest(self, only: dict | None = None) -> str | None:
        """Restores the newest checkpoint if there is one; returns its path."""
        path = self.latest
        if path is None:
            return None
        self.restore(path, only)
        return path


def checkpoint_dir(model_dir: str) -> str:
    return os.path.join(model_dir, "checkpoints")
