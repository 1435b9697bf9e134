"""SIGTERM and SIGINT held back over a short section that must not be cut (saving a
SavedModel: a signal raised inside TensorFlow's tracing can surface as an unrelated
error), then delivered to the handlers that were there before."""

from __future__ import annotations

import contextlib
import signal
import threading

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextlib.contextmanager
def deferred_signals():
    """While active (main thread only), SIGTERM and SIGINT are recorded, not acted
    on; on leaving, the first one recorded is raised again for the earlier handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {
        s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in _SIGNALS
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if received:
            signal.raise_signal(received[0])
