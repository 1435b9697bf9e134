"""``--jit_compile=auto``: whether XLA compiles the training calls, decided in one
place from the device, the network, the precision, the CPU kernels and the CPU,
as measured in docs/benchmarks.md, and logged with the reason.
"""

from __future__ import annotations

import dataclasses
import functools

from absl import logging

from trainer import tf_internals
from trainer.config import Config


@dataclasses.dataclass(frozen=True)
class CpuFeatures:
    """What ``--jit_compile=auto`` reads of the host CPU: ``bf16`` (AVX512_BF16 or
    AMX-BF16, which oneDNN's bfloat16 kernels use)."""

    bf16: bool = False


@functools.cache
def cpu_features(cpuinfo: str = "/proc/cpuinfo") -> CpuFeatures:
    """The host's ``CpuFeatures``, from the first ``flags`` line of ``cpuinfo``;
    none where it cannot be read (not Linux)."""
    flags: set[str] = set()
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                name, _, value = line.partition(":")
                if name.strip() == "flags":
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return CpuFeatures(bf16=bool({"avx512_bf16", "amx_bf16"} & flags))


def auto_jit(
    device: str,
    convolutions: bool,
    precision: str = "float32",
    onednn: bool = True,
    cpu: CpuFeatures | None = None,
) -> bool:
    """``--jit_compile=auto``'s choice on one device (``auto_jit_choice`` gives why)."""
    return auto_jit_choice(device, convolutions, precision, onednn, cpu)[0]


def auto_jit_choice(
    device: str,
    convolutions: bool,
    precision: str = "float32",
    onednn: bool = True,
    cpu: CpuFeatures | None = None,
) -> tuple[bool, str]:
    """``(XLA on, why)`` for ``--jit_compile=auto`` on one device, the reason for the log.

    XLA on GPUs. On CPUs it depends on the kernels XLA would replace, as
    measured (docs/benchmarks.md, fifth and sixth rounds): in bfloat16, XLA only
    where those lack bfloat16 hardware (oneDNN off, or a CPU without
    AVX512_BF16/AMX-BF16; ``cpu``: the host's by default); in float32, dense
    networks always, convolutions only without oneDNN.
    """
    if device == "gpu":
        return True, "GPU"
    cpu = cpu_features() if cpu is None else cpu
    if precision == "bfloat16":
        if onednn and cpu.bf16:
            return False, (
                "bfloat16 on oneDNN with this CPU's bfloat16 instructions, measured faster"
            )
        if onednn:
            return True, (
                "bfloat16 on a CPU without bfloat16 instructions, measured faster with XLA"
            )
        return True, "bfloat16 on TensorFlow's own CPU kernels"
    if convolutions:
        if onednn:
            return False, "convolutions on oneDNN's float32 kernels, measured faster"
        return True, "convolutions on TensorFlow's own CPU kernels, measured faster with XLA"
    return True, "dense layers in float32, measured faster with XLA on CPU"


def _layer_kinds(model: str, layers: str | None, hidden) -> list:
    """The ``LayerKind`` of each layer of a ``--model`` (with its ``--layers`` or
    ``--hidden``); empty if the specification does not parse."""
    from models import spec

    try:
        return [item.kind for item in spec.parse(spec.model_spec(model, layers, hidden))]
    except spec.SpecError:
        return []


def uses_convolutions(model: str, layers: str | None = None, hidden=()) -> bool:
    """Whether a ``--model`` (with its ``--layers`` or ``--hidden``) has a convolution
    (False if the specification does not parse)."""
    return any(kind.window == "kernel_size" for kind in _layer_kinds(model, layers, hidden))


def xla_nondeterministic(model: str, layers: str | None = None, hidden=()) -> list[str]:
    """The layer tokens of a network that XLA cannot differentiate deterministically
    (``LayerKind.xla_deterministic``), each once, in order."""
    names = [k.name for k in _layer_kinds(model, layers, hidden) if not k.xla_deterministic]
    return list(dict.fromkeys(names))


def resolve_jit(config: Config, device: str, num_replicas: int, strategy_name: str) -> bool:
    """Decides whether XLA compiles the training calls (the engine's
    ``jit_compile``), and logs why."""
    requested = config.jit_compile
    if strategy_name != "default" or num_replicas > 1:
        if requested == "true":
            logging.warning("XLA: off (requested, but not supported under --strategy here)")
        else:
            logging.info("XLA: off (under a distribution strategy)")
        return False
    if requested == "true":
        blocking = config.deterministic and xla_nondeterministic(
            config.model, config.layers, config.hidden
        )
        if blocking:
            logging.warning(
                "XLA: off (requested, but XLA has no deterministic gradient for %s, "
                "and --deterministic wins)",
                ", ".join(blocking),
            )
            return False
        logging.info("XLA: on (--jit_compile=true)")
        return True
    if requested == "false":
        logging.info("XLA: off (--jit_compile=false)")
        return False
    if config.deterministic:
        logging.info("XLA: off (auto: --deterministic)")
        return False
    convolutions = uses_convolutions(config.model, config.layers, config.hidden)
    on, reason = auto_jit_choice(
        device, convolutions, config.precision, tf_internals.onednn_enabled()
    )
    logging.info("XLA: %s (auto: %s)", "on" if on else "off", reason)
    return on
