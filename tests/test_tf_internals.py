"""TensorFlow's internals that trainer.tf_internals reaches into: each still exists
and still does what the trainer relies on. A TensorFlow upgrade that breaks one
fails here, by name, rather than silently in a multi-worker run."""

import ctypes
import os
import signal
import sys

import pytest
import tensorflow as tf

from trainer import tf_internals


def test_onednn_enabled_reads_tensorflows_own_flag():
    from tensorflow.python.util import _pywrap_util_port

    assert callable(_pywrap_util_port.IsMklEnabled), "TensorFlow moved IsMklEnabled"
    assert tf_internals.onednn_enabled() is bool(_pywrap_util_port.IsMklEnabled())


def test_the_collective_ops_binding_and_its_c_function_are_there():
    from tensorflow.python import pywrap_tfe

    assert callable(pywrap_tfe.TFE_EnableCollectiveOps), "TensorFlow renamed its binding"
    if not sys.platform.startswith("linux"):
        pytest.skip("the shared libraries are looked up by their Linux names")
    replacement = tf_internals.enable_collective_ops_through_ctypes()
    assert replacement is not None, "TFE_EnableCollectiveOps or TF_NewStatus not found"
    # The same C function refuses a malformed ServerDef with TensorFlow's own error.
    from tensorflow.python.eager import context

    context.ensure_initialized()
    with pytest.raises(tf.errors.OpError):
        replacement(context.context()._handle, b"\xff not a ServerDef")


def test_joining_without_the_gil_swaps_the_binding_and_puts_it_back():
    from tensorflow.python import pywrap_tfe

    original = pywrap_tfe.TFE_EnableCollectiveOps
    with tf_internals.joining_without_the_gil():
        assert pywrap_tfe.TFE_EnableCollectiveOps is not original
    assert pywrap_tfe.TFE_EnableCollectiveOps is original


def test_c_handlers_put_pythons_handler_back_after_c_code_replaces_it():
    if not sys.platform.startswith("linux"):
        pytest.skip("sigaction through ctypes is checked on Linux")
    received = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: received.append(signum))
    try:
        handlers = tf_internals.CHandlers([signal.SIGUSR1])
        libc = ctypes.CDLL(None)
        libc.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
        libc.signal.restype = ctypes.c_void_p
        libc.signal(signal.SIGUSR1, ctypes.c_void_p(1))  # SIG_IGN, as C++ code could set
        handlers.reassert()
        os.kill(os.getpid(), signal.SIGUSR1)
        assert received == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, previous)
