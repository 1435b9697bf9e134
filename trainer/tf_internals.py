"""Every use of TensorFlow's internals, in one place, each with a test that fails
loudly when a TensorFlow upgrade breaks it (``tests/test_tf_internals.py``).

TensorFlow offers no public way to do these, and each serves a promise of the
command line:

* ``onednn_enabled``: whether the oneDNN CPU kernels run (the log says which,
  and ``--jit_compile=auto`` decides by it): ``_pywrap_util_port.IsMklEnabled``.
* ``joining_without_the_gil``: ``MultiWorkerMirroredStrategy()`` waits for every
  worker inside ``TFE_EnableCollectiveOps``, whose Python binding holds the GIL
  for the whole wait, so no other Python thread (the watchdog that honours
  ``--worker_timeout``, SIGTERM and SIGINT) could run. For that call the
  binding is replaced by a ctypes call of the same C API function, which
  releases the GIL. (The coordination service's own registration timeout is
  set through the private ``context.configure_coordination_service`` too, and
  would not let a signal through.)
* ``CHandlers``: TensorFlow's coordination service installs its own SIGTERM
  handler during that wait (a preemption notice that only sets a flag); the
  C-level handlers Python installed are put back with ``sigaction``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os

from absl import logging


def onednn_enabled() -> bool:
    """Whether TensorFlow runs its oneDNN CPU kernels in this process."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


class CHandlers:
    """Python's C-level handlers of some signals, put back when C++ code replaces them.

    The raw ``struct sigaction`` is copied as opaque bytes: no layout is assumed
    beyond the handler's address coming first.
    """

    _SIZE = 512  # more than any libc's struct sigaction
    _POINTER = ctypes.sizeof(ctypes.c_void_p)

    def __init__(self, signums):
        self._saved = {}
        try:
            self._sigaction = ctypes.CDLL(None, use_errno=True).sigaction
        except (OSError, AttributeError, TypeError):
            return
        self._sigaction.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
        self._sigaction.restype = ctypes.c_int
        for signum in signums:
            current = self._get(signum)
            if current is not None:
                self._saved[signum] = current

    def _get(self, signum):
        action = ctypes.create_string_buffer(self._SIZE)
        return action if self._sigaction(signum, None, action) == 0 else None

    def reassert(self) -> None:
        for signum, saved in self._saved.items():
            current = self._get(signum)
            if current is not None and current.raw[: self._POINTER] != saved.raw[: self._POINTER]:
                self._sigaction(signum, saved, None)


@contextlib.contextmanager
def joining_without_the_gil():
    """Lets other Python threads run while the strategy waits for the other workers
    (see the module docstring). Where the C API cannot be found, TensorFlow's own
    binding is left in place."""
    from tensorflow.python import pywrap_tfe

    original = pywrap_tfe.TFE_EnableCollectiveOps
    replacement = enable_collective_ops_through_ctypes()
    if replacement is None:
        yield
        return
    pywrap_tfe.TFE_EnableCollectiveOps = replacement
    try:
        yield
    finally:
        pywrap_tfe.TFE_EnableCollectiveOps = original


def enable_collective_ops_through_ctypes():
    """``pywrap_tfe.TFE_EnableCollectiveOps`` through ctypes (GIL released), or None."""
    import tensorflow as tf

    def library(name: str):  # Linux, then macOS
        for file_name in (f"lib{name}.so.2", f"lib{name}.2.dylib"):
            path = os.path.join(tf.sysconfig.get_lib(), file_name)
            if os.path.exists(path):
                return ctypes.CDLL(path)
        raise OSError(f"no lib{name} in {tf.sysconfig.get_lib()}")

    try:
        api, framework = library("tensorflow_cc"), library("tensorflow_framework")
        enable = api.TFE_EnableCollectiveOps
        new_status, delete_status = framework.TF_NewStatus, framework.TF_DeleteStatus
        get_code, get_message = framework.TF_GetCode, framework.TF_Message
    except (OSError, AttributeError) as error:
        logging.warning(
            "--strategy=multi_worker: --worker_timeout, SIGTERM and SIGINT take effect only "
            "once every worker has joined (TensorFlow's C API not found: %s)",
            error,
        )
        return None
    enable.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_void_p]
    enable.restype = None
    new_status.argtypes, new_status.restype = [], ctypes.c_void_p
    delete_status.argtypes, delete_status.restype = [ctypes.c_void_p], None
    get_code.argtypes, get_code.restype = [ctypes.c_void_p], ctypes.c_int
    get_message.argtypes, get_message.restype = [ctypes.c_void_p], ctypes.c_char_p
    capsule_pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
        ("PyCapsule_GetPointer", ctypes.pythonapi)
    )

    def enable_collective_ops(context_handle, server_def: bytes) -> None:
        context = capsule_pointer(context_handle, None)  # the TFE_Context*
        status = new_status()
        try:
            enable(context, server_def, len(server_def), status)
            code = get_code(status)
            if code:
                message = (get_message(status) or b"").decode(errors="replace")
                error_type = tf.compat.v1.errors.exception_type_from_error_code(code)
                raise error_type(None, None, message)
        finally:
            delete_status(status)

    return enable_collective_ops
