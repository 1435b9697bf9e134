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

# On CPU, XLA for dense float32 networks whose layers are at most this wide, and
# for wider ones where the CPU has AVX-512 (oneDNN's matmuls win on wide layers
# without it; docs/benchmarks.md, fifth round).
XLA_DENSE_WIDTH = 256


@dataclasses.dataclass(frozen=True)
class CpuFeatures:
    """What ``--jit_compile=auto`` reads of the host CPU: ``avx512`` (AVX-512F,
    for which XLA generates code where TensorFlow's element-wise kernels are
    built for AVX) and ``bf16`` (AVX512_BF16 or AMX-BF16, which oneDNN's
    bfloat16 kernels use)."""

    avx512: bool = False
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
    return CpuFeatures(avx512="avx512f" in flags, bf16=bool({"avx512_bf16", "amx_bf16"} & flags))


def auto_jit(
    device: str,
    convolutions: bool,
    precision: str = "float32",
    onednn: bool = True,
    widest: int = 0,
    cpu: CpuFeatures | None = None,
) -> bool:
    """``--jit_compile=auto``'s choice on one device (``auto_jit_reason`` says why).

    XLA on GPUs. On CPUs it depends on the kernels XLA would replace, as
    measured (docs/benchmarks.md, fifth round): in bfloat16, XLA only where
    those lack bfloat16 hardware (oneDNN off, or a CPU without
    AVX512_BF16/AMX-BF16); in float32, convolutions only without oneDNN; dense
    networks when no layer is wider than ``XLA_DENSE_WIDTH`` or the CPU has
    AVX-512 (``cpu``: the host's by default).
    """
    if device == "gpu":
        return True
    cpu = cpu_features() if cpu is None else cpu
    if precision == "bfloat16":
        return not (onednn and cpu.bf16)
    if convolutions:
        return not onednn
    return widest <= XLA_DENSE_WIDTH or cpu.avx512


def auto_jit_reason(
    device: str,
    convolutions: bool,
    precision: str,
    onednn: bool,
    widest: int,
    cpu: CpuFeatures,
) -> str:
    """Why ``auto_jit`` chose what it did, for the log."""
    if device == "gpu":
        return "GPU"
    if precision == "bfloat16":
        if onednn and cpu.bf16:
            return "bfloat16 on oneDNN with this CPU's bfloat16 instructions, measured faster"
        if onednn:
            return "bfloat16 on a CPU without bfloat16 instructions, measured faster with XLA"
        return "bfloat16 on TensorFlow's own CPU kernels"
    if convolutions:
        if onednn:
            return "convolutions on oneDNN's float32 kernels, measured faster"
        return "convolutions on TensorFlow's own CPU kernels, measured faster with XLA"
    if widest <= XLA_DENSE_WIDTH:
        return (
            f"dense layers at most {XLA_DENSE_WIDTH} wide, measured faster with XLA on CPU; "
            "the whole loop when batches are gathered in memory"
        )
    if cpu.avx512:
        return (
            f"dense layers wider than {XLA_DENSE_WIDTH} on an AVX-512 CPU, measured faster "
            "with XLA; the whole loop when batches are gathered in memory"
        )
    return f"dense layers wider than {XLA_DENSE_WIDTH} without AVX-512, measured slower with XLA"


def layer_facts(model: str, layers: str | None = None, hidden=()) -> tuple[bool, int]:
    """``(has convolutions, widest dense layer's units)`` of a ``--model`` (with its
    ``--layers`` or ``--hidden``); the output layer is not counted (``(False, 0)``
    if the specification does not parse)."""
    from models import spec

    try:
        specs = spec.parse(spec.model_spec(model, layers, hidden))
    except spec.SpecError:
        return False, 0
    widths = [item.options["output_size"] for item in specs if item.layer == "Dense"]
    return any(item.layer == "Conv2D" for item in specs), max(widths, default=0)


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
        logging.info("XLA: on (--jit_compile=true)")
        return True
    if requested == "false":
        logging.info("XLA: off (--jit_compile=false)")
        return False
    if config.deterministic:
        logging.info("XLA: off (auto: --deterministic)")
        return False
    convolutions, widest = layer_facts(config.model, config.layers, config.hidden)
    onednn = tf_internals.onednn_enabled()
    cpu = cpu_features()
    on = auto_jit(device, convolutions, config.precision, onednn, widest, cpu)
    logging.info(
        "XLA: %s (auto: %s)",
        "on" if on else "off",
        auto_jit_reason(device, convolutions, config.precision, onednn, widest, cpu),
    )
    return on
