"""The layer specification of ``--layers``, the presets, and one source of truth:
the command line's choices, defaults and help are the registries'."""

import json
import subprocess
import sys

import pytest

from models import registry, spec
from trainer import config as config_lib

from helpers import ROOT


def test_a_specification_parses_into_layers_and_options():
    parsed = spec.parse(
        "conv3x3:32, conv5:8:valid:tanh:s2 ,maxpool2,avgpool3x3:s1:same,flatten,"
        "dropout:0.5,bn:m0.9,relu,dense:128:elu,dense:10"
    )
    assert [p.layer for p in parsed] == [
        "Conv2D", "Conv2D", "MaxPool2D", "AvgPool2D", "Flatten", "Dropout", "BatchNorm",
        "Activation", "Dense", "Dense",
    ]  # fmt: skip
    assert parsed[0].options == {"filters": 32, "kernel_size": 3}
    assert parsed[1].options == {
        "filters": 8, "kernel_size": 5, "padding": "valid", "activation": "tanh", "strides": 2
    }  # fmt: skip
    assert parsed[3].options == {"pool_size": 3, "strides": 1, "padding": "same"}
    assert parsed[5].options == {"rate": 0.5} and parsed[6].options == {"momentum": 0.9}
    assert parsed[8].options == {"output_size": 128, "activation": "elu"}
    assert spec.parse("") == [] and spec.uses_images(parsed)
    assert not spec.uses_images(spec.parse("dropout:0.1,dense:5"))


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("conv3x3:32,foo", "'foo': unknown layer"),
        ("conv3x3", "'conv3x3': write convKxK:FILTERS"),
        ("conv:32", "give the kernel size"),
        ("conv3x5:8", "only square windows"),
        ("conv3x3:0", "between 1 and 65536"),
        ("conv3x3:8:s0", "the stride must be between 1"),
        ("conv3x3:8:wide", "unknown option 'wide'"),
        ("conv3x3:8:relu:tanh", "activation given twice"),
        ("dense", "write dense:UNITS"),
        ("dense:-3", "a positive integer"),
        ("dense:99999999999", "between 1 and 2147483647"),
        ("dense:8:valid", "unknown option 'valid'"),
        ("maxpool", "give the window size"),
        ("maxpool2:relu", "unknown option 'relu'"),
        ("dropout", "write dropout:RATE"),
        ("dropout:1", "in [0, 1)"),
        ("dropout:nan", "in [0, 1)"),
        ("flatten:2", "takes no options"),
        ("bn:m1.5", "in [0, 1)"),
        ("relu:2", "takes no options"),
        ("dense:8,,dense:4", "empty token at position 2"),
    ],
)
def test_bad_tokens_are_named(text, fragment):
    with pytest.raises(spec.SpecError) as raised:
        spec.parse(text)
    assert fragment in str(raised.value) and "\n" not in str(raised.value)


def test_resolve_checks_the_specification_and_fills_model_defaults():
    config = config_lib.resolve({"model": "cnn"})
    assert config.layers == registry.MODELS.get("cnn").layers and config.activation == "relu"
    assert config_lib.resolve({"model": "lenet"}).activation == "tanh"
    assert config_lib.resolve({"model": "notebook_deep"}).activation == "sigmoid"
    assert config_lib.resolve({"model": "mlp", "activation": "tanh"}).activation == "tanh"
    with pytest.raises(config_lib.UsageError, match=r"^--layers=conv3x3:8,pool: 'pool': unknown"):
        config_lib.resolve({"model": "cnn", "layers": "conv3x3:8,pool"})
    with pytest.raises(config_lib.UsageError, match="applies to --model=cnn only"):
        config_lib.resolve({"model": "mlp", "layers": "dense:8"})


# The trainer's flags as absl defines them, dumped by a fresh interpreter (other
# tests import modules that define flags of the same names in this process).
DUMP_FLAGS = """
import json
from absl import flags
import trainer.flags
print(json.dumps({
    name: {"default": flag.default, "help": flag.help,
           "choices": list(getattr(flag.parser, "enum_values", None) or [])}
    for name, flag in flags.FLAGS._flags().items()
}))
"""


def test_the_command_line_and_the_registries_agree():
    """Every list of choices and default is defined once: the flags, Config and
    their help come from the registries and the table of data sources."""
    from trainer.data import SOURCES

    assert config_lib.CHOICES["activation"] == registry.ACTIVATIONS.names
    assert config_lib.CHOICES["init"] == registry.INITIALIZERS.names
    assert config_lib.CHOICES["loss"] == registry.LOSSES.names
    assert config_lib.CHOICES["optimizer"] == registry.OPTIMIZERS.names
    assert config_lib.CHOICES["lr_schedule"] == registry.SCHEDULES.names
    assert config_lib.CHOICES["model"] == registry.MODELS.names
    assert config_lib.CHOICES["dataset"] == SOURCES.names
    done = subprocess.run(
        [sys.executable, "-c", DUMP_FLAGS], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    defined = json.loads(done.stdout)
    defaults = config_lib.Config()
    for name, options in config_lib.CHOICES.items():
        assert tuple(defined[name]["choices"]) == tuple(options), name
    for name in config_lib.FLAG_NAMES:
        flag_default = defined[name]["default"]
        if name in config_lib.OPTION_FLAGS:  # the chosen optimizer's or schedule's own
            assert flag_default is None, name
            continue
        if name == "hidden":
            flag_default = config_lib.parse_hidden(flag_default)
        if name in ("epochs", "learning_rate", "loss", "model_dir"):
            assert flag_default is None  # "choose for me": resolved from other settings
            continue
        assert flag_default == getattr(defaults, name), name
    rates = defined["learning_rate"]["help"]
    for optimizer in registry.OPTIMIZERS:
        assert f"{optimizer.name} {optimizer.learning_rate:g}" in rates
        assert config_lib.resolve({"optimizer": optimizer.name}).learning_rate == (
            optimizer.learning_rate
        )
        assert optimizer.doc in defined["optimizer"]["help"]
        for name, default in optimizer.hyperparameters.items():
            assert f"{optimizer.name} {default}" in defined[name]["help"]
    for schedule in registry.SCHEDULES:
        assert schedule.doc in defined["lr_schedule"]["help"]
        for name in schedule.options:
            assert schedule.name in defined["lr_" + name]["help"]
    for model in registry.MODELS:
        assert model.name in defined["model"]["help"]
    for source in SOURCES:
        assert source.doc in defined["dataset"]["help"]
    for kind in registry.LAYERS:
        if not kind.fixed:
            assert kind.usage.split(" ")[0] in defined["layers"]["help"]
    assert registry.MODELS.get("cnn").layers in defined["layers"]["help"]


def test_every_registered_implementation_loads_and_the_defaults_agree():
    import inspect

    for family in (registry.ACTIVATIONS, registry.INITIALIZERS, registry.LOSSES):
        for entry in family:
            assert callable(entry.load()), entry.name
    for kind in registry.LAYERS:
        cls = kind.load()
        options = {**kind.fixed, **spec.parse(kind.example)[0].options}
        assert set(options) <= set(inspect.signature(cls).parameters), kind.name
    for optimizer in registry.OPTIMIZERS:
        parameters = inspect.signature(optimizer.load()).parameters
        for name, default in {**optimizer.hyperparameters, **optimizer.fixed}.items():
            if name in optimizer.hyperparameters:
                assert parameters[name].default == default, (optimizer.name, name)
            assert name in parameters, (optimizer.name, name)
    for schedule in registry.SCHEDULES:
        parameters = inspect.signature(schedule.load()).parameters
        assert list(parameters)[:2] == ["update", "elapsed"], schedule.name
        assert set(parameters) - {"update", "elapsed"} == set(schedule.options), schedule.name
        assert set(schedule.options) <= set(registry.SCHEDULE_OPTIONS), schedule.name
    for optimizer in registry.OPTIMIZERS:
        assert set(optimizer.hyperparameters) <= set(registry.HYPERPARAMETERS), optimizer.name
