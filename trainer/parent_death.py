"""A child process that ends with its parent: Linux's ``PR_SET_PDEATHSIG`` through
libc's ``prctl`` (ctypes; not TensorFlow), so that the runs of a sweep killed by
SIGKILL do not train on as orphans holding their run folders. Elsewhere nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_PRCTL = None  # libc's prctl, loaded in the parent before the first child starts


def load() -> None:
    """Loads ``prctl`` (in the parent: a child between fork and exec should not)."""
    global _PRCTL
    if _PRCTL is None:
        _PRCTL = False
        if sys.platform.startswith("linux"):
            import ctypes

            with contextlib.suppress(OSError, AttributeError):
                _PRCTL = ctypes.CDLL(None, use_errno=True).prctl


def die_with_parent(parent: int) -> None:
    """In a child, first: SIGTERM when ``parent`` ends, however it ends (even
    SIGKILL); a parent that ended before that: exit now, 128 + SIGTERM."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's handler, until exec
    if _PRCTL:
        _PRCTL(PR_SET_PDEATHSIG, int(signal.SIGTERM))
    if os.getppid() != parent:
        os._exit(128 + signal.SIGTERM)
