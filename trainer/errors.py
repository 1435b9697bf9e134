"""The errors every part of the trainer raises, and how one is told in a line.

Each ends a program with one line and its own exit status (``trainer.main``):
``UsageError`` (bad input: a flag, a data file, config.json, a checkpoint, a
folder; status 2), ``NonFiniteError`` (NaN/Inf in training; 3),
``TrainingStopped`` (a signal, after saving; 128 + signal). Nothing here
imports TensorFlow or absl, so every module can use it.
"""

from __future__ import annotations

import signal


class UsageError(ValueError):
    """Bad input from the user: printed as one line, exit status 2."""


class DataError(UsageError):
    """A missing or malformed data file; the message names the file."""


class NonFiniteError(Exception):
    """NaN or Inf in the loss, gradients, weights or outputs; nothing after the last
    good checkpoint was saved.

    Raised where the checkpoints are unknown (inside training), the message holds
    ``{checkpoint}`` for the last good one, which ``with_checkpoint`` fills in.
    """

    def __init__(self, message: str):
        self.template = message
        super().__init__(message.replace("{checkpoint}", "none"))

    def with_checkpoint(self, latest: str | None) -> NonFiniteError:
        """The same error, naming ``latest`` as the last good checkpoint."""
        return NonFiniteError(self.template.replace("{checkpoint}", latest or "none"))


class TrainingStopped(Exception):
    """A signal asked training to stop; the checkpoint of ``step`` is saved."""

    def __init__(self, signal_name: str, step: int, by_peer: bool = False):
        self.signum = int(signal.Signals[signal_name])
        if by_peer:
            super().__init__(
                f"another worker received {signal_name}: every worker saved the checkpoint "
                f"of step {step}; run the same command again on every worker to resume"
            )
        else:
            super().__init__(
                f"received {signal_name}: saved the checkpoint of step {step}; "
                "run the same command again to resume"
            )


def one_line(error: BaseException, limit: int = 300) -> str:
    """``error``'s message on one line, at most ``limit`` characters.

    TensorFlow's messages open with "Graph execution error:" and the Python
    frames of the failing op; those lines are left out, so the cause leads.
    """
    lines = str(getattr(error, "message", error)).splitlines()
    noise = ("Graph execution error", "Detected at node", "File ")
    lines = [line.strip() for line in lines if line.strip()]
    lines = [line for line in lines if not line.startswith(noise)]
    text = " ".join(" ".join(lines).split()) or type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
