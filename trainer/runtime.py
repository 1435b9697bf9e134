"""Process set-up: TensorFlow's import, devices, the strategy, seeds, and the
choices of ``xla_policy``.

Every choice made here is logged, so a run's log says where and how it ran.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.abc
import logging as pylogging
import os
import sys
import warnings

from absl import logging

from trainer import tf_internals
from trainer.cluster import is_chief_task, tf_config_task
from trainer.config import Config
from trainer.errors import UsageError
from trainer.worker_guard import guard_workers
from trainer.xla_policy import resolve_jit

# TensorFlow's oneDNN CPU kernels (matmul, convolution and their fusions).
# TensorFlow turns them on by itself only on CPUs with AVX-512 VNNI/BF16 or AMX;
# they measured faster on AVX2 CPUs too (docs/benchmarks.md, third round), so the
# trainer turns them on unless the environment already sets the variable.
ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


def import_tensorflow(verbose: bool = False):
    """Imports TensorFlow, hiding its C++ start-up chatter unless ``verbose``.

    ``TF_CPP_MIN_LOG_LEVEL`` must be set before the import; the few lines
    printed before absl's C++ logging starts (oneDNN, CUDA probing) ignore it,
    so standard error is also muted at the file-descriptor level during the
    import only. oneDNN's CPU kernels are on unless ``TF_ENABLE_ONEDNN_OPTS``
    says otherwise (``ONEDNN_VARIABLE``); it too is read at the import.
    """
    if "tensorflow" not in sys.modules:
        os.environ.setdefault(ONEDNN_VARIABLE, "1")
    if "tensorflow" in sys.modules or verbose:
        import tensorflow as tf

        return tf
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _muted_stderr(), _without_keras():
        import tensorflow as tf
    # TensorFlow's own Python INFO lines (saver timings and the like), whether
    # they go through its logger or straight through absl.
    tf.get_logger().setLevel("WARNING")
    logging.get_absl_handler().addFilter(_HideTensorFlowInfo())
    return tf


class _HideTensorFlowInfo(pylogging.Filter):
    """Drops INFO records that come from TensorFlow's own source files."""

    def filter(self, record: pylogging.LogRecord) -> bool:
        path = record.pathname.replace(os.sep, "/")
        return record.levelno >= pylogging.WARNING or "/tensorflow/" not in path


class _HideKeras(importlib.abc.MetaPathFinder):
    """Makes ``import keras.<anything>`` fail (``keras`` itself stays findable)."""

    def find_spec(self, name, path=None, target=None):
        if name.startswith("keras."):
            raise ImportError(f"{name}: not loaded while TensorFlow starts")
        return None


@contextlib.contextmanager
def _without_keras():
    """Imports TensorFlow without its eager import of Keras.

    ``import tensorflow`` loads ``keras.src.optimizers`` (and with it Keras and
    scikit-learn) when Keras is installed, only to register Keras objects for
    SavedModels of Keras models, inside a ``try/except ImportError``. This
    product never uses Keras, and that import was more than half of the
    start-up time (BUILD.md). ``tf.keras`` still loads lazily if anything asks
    for it, and ``import keras`` works as usual afterwards.
    """
    if any(name == "keras" or name.startswith("keras.") for name in sys.modules):
        yield
        return
    finder = _HideKeras()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


@contextlib.contextmanager
def _muted_stderr():
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (e.g. some test runners)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(devnull)
        os.close(saved)


@dataclasses.dataclass(frozen=True)
class Runtime:
    """What the run resolved to: devices, strategy, XLA, precision."""

    strategy: object
    device: str  # "cpu" or "gpu"
    num_replicas: int
    jit_compile: bool
    compute_dtype: object
    is_chief: bool
    num_workers: int = 1  # processes training together (multi_worker)
    task: str = ""  # this process in the cluster, e.g. "worker:1"; "" when alone


def configure_devices(config: Config):
    """Applies ``--device`` and ``--cpu_devices``; returns ``"cpu"`` or ``"gpu"``."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if config.device == "gpu" and not gpus:
        raise UsageError("--device=gpu: TensorFlow sees no GPU on this machine; use --device=cpu")
    try:
        if config.device == "cpu" and gpus:
            tf.config.set_visible_devices([], "GPU")
        if config.cpu_devices > 1:
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * config.cpu_devices
            )
    except RuntimeError as error:  # devices already initialized in this process
        logging.warning("device configuration left as it was: %s", error)
    return "gpu" if gpus and config.device != "cpu" else "cpu"


def make_strategy(config: Config, device: str):
    """Builds the ``tf.distribute`` strategy named by ``--strategy``."""
    import tensorflow as tf

    if config.strategy == "default":
        return tf.distribute.get_strategy()
    if config.strategy == "mirrored":
        if device == "gpu":
            return tf.distribute.MirroredStrategy()
        cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(cpus)
    if config.strategy == "multi_worker":
        tf_config_task(config)  # one-line errors for a missing or malformed TF_CONFIG
        # No collective timeout (CommunicationOptions.timeout_seconds costs a thread per
        # collective): a lost peer is caught by the coordination service's heartbeats,
        # which abort pending collectives with UnavailableError within about 10 s.
        try:
            with tf_internals.joining_without_the_gil():
                return tf.distribute.MultiWorkerMirroredStrategy()
        except (ValueError, KeyError) as error:
            raise UsageError(f"--strategy=multi_worker: bad TF_CONFIG ({error})") from None
    if config.strategy == "tpu":
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
        except (ValueError, RuntimeError, tf.errors.OpError) as error:
            message = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise UsageError(f"--strategy=tpu: no TPU found ({message})") from None
        return tf.distribute.TPUStrategy(resolver)
    raise UsageError(f"--strategy={config.strategy}: unknown strategy")


def log_cpu_kernels() -> None:
    setting = os.environ.get(ONEDNN_VARIABLE)
    if tf_internals.onednn_enabled():
        logging.info(
            "CPU kernels: oneDNN (%s=%s; 0 for TensorFlow's own)", ONEDNN_VARIABLE, setting
        )
    else:
        logging.info("CPU kernels: TensorFlow's own (%s=%s)", ONEDNN_VARIABLE, setting)


def seed_everything(config: Config) -> None:
    """Seeds Python-side and TensorFlow randomness; enables op determinism."""
    import numpy as np
    import tensorflow as tf

    tf.random.set_seed(config.seed)
    np.random.seed(config.seed % (2**32))
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
        logging.info("deterministic ops: on")


def stop_consensus(runtime_: Runtime):
    """With several workers, ``agree(code) -> sum of code over the workers`` (an
    all-reduce every worker calls after each training call: the controller's
    ``stop_consensus``); None for one worker."""
    if runtime_.num_workers <= 1:
        return None
    import tensorflow as tf

    strategy = runtime_.strategy

    @tf.function(autograph=False)
    def total(code):
        summed = strategy.run(tf.identity, args=(code,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, summed, axis=None)

    def agree(code: int) -> int:
        # (each worker's replicas all hold its code: divide them out)
        replicas = strategy.num_replicas_in_sync // runtime_.num_workers
        return round(float(total(tf.constant(float(code)))) / max(1, replicas))

    return agree


def setup(config: Config) -> Runtime:
    """Configures the process for ``config`` and returns what was resolved."""
    import tensorflow as tf

    device = configure_devices(config)
    seed_everything(config)
    with guard_workers(config, "join"):
        strategy = make_strategy(config, device)
    num_replicas = strategy.num_replicas_in_sync
    if config.strategy != "default":
        # Raised by tf.distribute's own dataset code on every trace; nothing to act on.
        warnings.filterwarnings(
            "ignore", "To make it possible to preserve tf.data options", UserWarning
        )
    jit = resolve_jit(config, device, num_replicas, config.strategy)
    log_cpu_kernels()
    dtype = tf.bfloat16 if config.precision == "bfloat16" else tf.float32
    is_chief, num_workers, task = True, 1, ""
    if config.strategy == "multi_worker":
        resolver = strategy.cluster_resolver
        cluster = resolver.cluster_spec().as_dict()
        is_chief = is_chief_task(cluster, resolver.task_type, resolver.task_id)
        num_workers = len(cluster.get("chief", ())) + len(cluster.get("worker", ()))
        task = f"{resolver.task_type}:{resolver.task_id}" if resolver.task_type else ""
        logging.info(
            "cluster: %d worker(s); this is %s%s",
            num_workers,
            task or "the only task",
            " (chief: writes checkpoints, summaries and results)" if is_chief else "",
        )
    logging.info(
        "device: %s; strategy: %s with %d replica(s); precision: %s",
        device,
        config.strategy,
        num_replicas,
        config.precision,
    )
    return Runtime(strategy, device, num_replicas, jit, dtype, is_chief, num_workers, task)
