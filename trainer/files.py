"""Files of a run folder, written and read safely (no TensorFlow here).

Written files never go through a planted link and never stay half-written;
read files must be regular files (a FIFO would block, a device never end).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile

from trainer.errors import UsageError


def write_atomically(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` through a fresh temporary file and a rename.

    The temporary file is created exclusively (never through a planted link)
    and ``rename`` replaces a link at ``path`` instead of following it; the
    temporary file is removed if anything fails.
    """
    folder = os.path.dirname(path) or "."
    fd, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=folder)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(temporary)
        raise


def write_json(path: str, payload) -> None:
    """Writes ``payload`` as indented JSON, atomically.

    Raises:
      UsageError: naming ``path``, when it cannot be written.
    """
    text = json.dumps(payload, indent=2, sort_keys=True) + "\n"
    try:
        write_atomically(path, text)
    except OSError as error:
        raise UsageError(f"{path}: cannot write ({error.strerror or error})") from None


def is_regular_file(path: str) -> bool:
    """Whether ``path`` is a regular file (following links); False if it is missing."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def read_json(path: str):
    """The JSON value in the regular file ``path``.

    Raises:
      OSError: missing, unreadable, or not a regular file.
      ValueError: not JSON (``json.JSONDecodeError``, ``UnicodeDecodeError``) or
        nested too deeply.
    """
    if os.path.exists(path) and not is_regular_file(path):
        raise OSError(f"{path} is not a regular file")
    with open(path, encoding="utf-8") as handle:
        try:
            return json.load(handle)
        except RecursionError:
            raise ValueError("nested too deeply") from None


def writable_folder(folder: str, label: str) -> None:
    """Creates ``folder`` if needed; raises ``UsageError`` naming ``label`` if unusable."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise UsageError(f"{label}: cannot create ({error.strerror or error})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{label}: folder is not writable")
