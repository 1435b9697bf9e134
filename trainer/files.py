"""Writing the files of a run folder safely (no TensorFlow here)."""

from __future__ import annotations

import contextlib
import os
import tempfile


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
