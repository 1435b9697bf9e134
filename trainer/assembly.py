"""A run's objects, assembled from its configuration, in order:
runtime -> data -> model, optimizer, schedule -> trainer, evaluator -> checkpoints.

Everything the outer loop needs is computed here once (the global batch size,
the total steps, the cadences), so the controller, the trainer and the
evaluator take plain values and never read the configuration.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time

import numpy as np
from absl import logging

from models import registry
from trainer import config as config_lib
from trainer import run_folder
from trainer.config import Config
from trainer.errors import UsageError
from trainer.resources import check_memory as check_available_memory


def _model_flag(config: Config) -> str:
    """The flag that chose the network, to name in an error."""
    takes = registry.MODELS.get(config.model).takes
    return f"--layers={config.layers}" if takes == "layers" else f"--model={config.model}"


def input_shape_of(config: Config) -> tuple[int, ...]:
    """One example's shape for the model: ``config.input_shape``, or ``(input_size,)``
    for a config.json written before shapes were recorded."""
    return tuple(config.input_shape) or (int(config.input_size),)


def build_model(config: Config, input_shape, num_outputs: int, normalization=None, targets=None):
    """The network of ``config`` for examples of ``input_shape``; a regression's
    (``config.num_classes == 0``) carries its ``TargetScaling`` (``targets``:
    ``(mean, scale)``, default ``(0, 1)`` until a checkpoint restores it).

    Raises:
      UsageError: the layers do not fit the data, naming the flag and the token.
    """
    from models import zoo
    from models.layers.normalization import TargetScaling

    try:
        model = zoo.build(
            config.model,
            input_shape,
            num_outputs,
            hidden=config.hidden,
            activation=config.activation,
            init=config.init,
            seed=config.seed,
            normalization=normalization,
            layers=config.layers,
        )
    except ValueError as error:
        raise UsageError(f"{_model_flag(config)}: {error}") from None
    if not config.num_classes:  # tracked by the model: checkpointed and exported with it
        model.target_scaling = TargetScaling(*(targets or (0.0, 1.0)))
    return model


INPUT_BATCHES = 4  # batches of input a run holds at once, at most (read, prefetched, in use)


def check_memory(config: Config, input_shape, num_outputs: int) -> None:
    """Refuses a network whose shapes do not chain, or whose weights, gradients,
    optimizer slots and the copies around an update cannot fit, before any
    variable is made.

    Raises:
      UsageError: naming the flag, and the size of the network and the memory it needs.
    """
    from models import optimizers, zoo

    try:
        _, params = zoo.plan(
            config.model, input_shape, num_outputs, hidden=config.hidden, layers=config.layers
        )
    except ValueError as error:
        raise UsageError(f"{_model_flag(config)}: {error}") from None
    # The inputs: the feature scaling (mean and scale, one value per input value)
    # and a few batches in flight (read, decoded, prefetched, trained on).
    values = int(np.prod(input_shape, dtype=np.int64))
    inputs = values * 4 * (2 + INPUT_BATCHES * config.batch_size)
    if config.dataset == "images" and inputs > params * 4:
        shape = "x".join(map(str, input_shape))
        check_available_memory(
            inputs,
            f"images of {shape} values in batches of {config.batch_size} (use a smaller "
            "--image_size or --batch_size)",
            f"--image_size={config.image_size}" if config.image_size else "--data_dir",
        )
    needed = params * 4 * (3 + optimizers.slot_count(config.optimizer)) + inputs
    flag = f"--hidden={','.join(map(str, config.hidden))}" if config.model == "mlp" else None
    check_available_memory(
        needed,
        f"a network of {params:,} parameters with --optimizer={config.optimizer} "
        "(use smaller layers)",
        flag or _model_flag(config),
    )


def make_schedule(config: Config, total_steps: int, steps_per_epoch: int):
    """The ``models.schedules.Schedule`` of ``--lr_schedule`` and its options, with
    ``decay_steps`` filled in where the registry leaves it to the run.

    Raises:
      UsageError: naming ``--lr_schedule`` and what the schedule refused.
    """
    from models import schedules

    options = dict(registry.SCHEDULES.get(config.lr_schedule).options)
    options.update(config.lr_options)
    if options.get("decay_steps") == registry.REST_OF_RUN:
        options["decay_steps"] = max(1, total_steps - config.warmup_steps)
    elif options.get("decay_steps") == registry.ONE_EPOCH:
        options["decay_steps"] = max(1, steps_per_epoch)
    try:
        return schedules.Schedule(
            config.learning_rate, config.lr_schedule, config.warmup_steps, **options
        )
    except ValueError as error:
        raise UsageError(f"--lr_schedule={config.lr_schedule}: {error}") from None


@dataclasses.dataclass(frozen=True)
class Plan:
    """The run's figures, computed once: examples per step over all replicas,
    training steps in all and per epoch, and the cadences (steps; 0 = never)."""

    batch_size: int
    total_steps: int
    steps_per_epoch: int
    steps_per_loop: int
    log_every: int
    eval_every: int


MAX_EVALUATIONS = 50  # by default; --eval_every sets any cadence


def plan(config: Config, num_train: int, num_replicas: int) -> Plan:
    """The figures of ``config`` on ``num_train`` training examples.

    Raises:
      UsageError: the batch does not divide over the replicas.
    """
    batch = min(config.batch_size, num_train)  # larger than the data: full batch
    if batch % num_replicas:
        full = (
            f" (the {num_train} training examples, a full batch)"
            if batch < config.batch_size
            else ""
        )
        raise UsageError(
            f"--batch_size={config.batch_size}{full}: {batch} examples must divide evenly over "
            f"{num_replicas} replicas"
        )
    per_epoch = max(1, num_train // batch)
    if config.train_steps:
        total = config.train_steps
    else:
        epochs = config.epochs or max(
            config_lib.DEFAULT_EPOCHS, math.ceil(config_lib.MIN_DEFAULT_STEPS / per_epoch)
        )
        total = epochs * per_epoch
    log_every = config.log_every or max(1, total // 10)
    eval_every = config.eval_every
    if eval_every is None and config.mode == "train_and_eval":
        # Once per epoch, or every few epochs: at most MAX_EVALUATIONS in a run.
        eval_every = per_epoch * math.ceil(math.ceil(total / per_epoch) / MAX_EVALUATIONS)
    elif eval_every is None:  # only at the end
        eval_every = 0
    return Plan(
        batch,
        total,
        per_epoch,
        config.steps_per_loop or min(log_every, 1000),
        log_every,
        eval_every,
    )


def _check_objective(config: Config) -> None:
    if config.loss == "cross_entropy" and not config.num_classes:
        raise UsageError(f"--loss=cross_entropy: --dataset={config.dataset} is a regression")
    if config.best_metric == "validation_accuracy" and config.loss != "cross_entropy":
        raise UsageError(
            f"--best_metric=validation_accuracy: --loss={config.loss} has no accuracy; "
            "use --best_metric=validation_loss"
        )


def _check_image_settings(config: Config, images: bool) -> None:
    """Refuses settings about images that this run's data or network would ignore
    (checked on the run's whole configuration, config.json's settings included)."""
    if config.augment and not images:
        raise UsageError(
            f"--augment={config.augment}: transforms images, but --model={config.model} takes "
            "flat features; use a convolutional model (--model=cnn, lenet, ...)"
        )
    if config.dataset != "images":
        given = [
            f"--{name}={value}"
            for name, value, default in (
                ("image_size", config.image_size, None),
                ("channels", config.channels, 0),
                ("bad_images", config.bad_images, "stop"),
            )
            if value != default
        ]
        if given:
            raise UsageError(
                f"{given[0]}: applies to --dataset=images only (a folder converted to TFRecords "
                f"keeps the size and channels it was converted with; --dataset={config.dataset})"
            )


def _open_data(config: Config):
    """``(source, config with the data's facts)``; refuses other data on resume."""
    from models import spec
    from trainer.data.sources import open_source

    layers = spec.parse(spec.model_spec(config.model, config.layers, config.hidden))
    _check_image_settings(config, spec.uses_images(layers))  # before a folder is scanned
    source = open_source(config)
    logging.info("data: %s", source.description)
    if (
        config.mode in ("train", "train_and_eval")
        and config.data_fingerprint
        and config.data_fingerprint != source.fingerprint
        and run_folder.has_checkpoints(config.model_dir)
    ):
        raise UsageError(
            f"--model_dir={config.model_dir}: the training data differ from those this "
            f"run was trained on (fingerprint {source.fingerprint}, the run's "
            f"{config.data_fingerprint}: another or a changed file, or another split); "
            "use a new --model_dir (nothing was changed)"
        )
    if spec.uses_images(layers):
        # Convolutional models take [H, W, C] examples (a view of the same data).
        source = source.as_images()
    names = source.class_names
    facts = dataclasses.replace(
        config,
        input_size=source.input_size,
        input_shape=tuple(source.input_shape),
        encoded_image_shape=tuple(source.encoded_images or ()),
        num_classes=source.num_classes,
        class_names=tuple(names) if names is not None else None,
        data_fingerprint=source.fingerprint,
    )
    return source, facts


class Run:
    """One run's objects, built in the strategy's scope.

    With ``load_data=False`` (export) the model's sizes come from the saved
    config.json and its feature scaling from the checkpoint.

    Attributes: ``config`` (with the data's facts), ``runtime``, ``source``,
    ``plan``, ``model``, ``optimizer``, ``schedule``, ``trainer``,
    ``evaluator``, ``tracker``, ``checkpoints``, ``best_model`` (the
    controller's eval action, over ``tracker``), ``started``.
    """

    def __init__(self, config: Config, load_data: bool = True):
        from trainer import runtime

        self.started = time.time()
        config = config_lib.complete(config)
        if not load_data and not config.input_size:
            raise UsageError(f"--model_dir={config.model_dir}: no config.json from training")
        # First, before any TensorFlow op: collective ops (multi_worker) and
        # logical devices must be configured at program start-up.
        self.runtime = runtime.setup(config)
        if load_data:
            self.source, config = _open_data(config)
            normalization = (self.source.feature_mean, self.source.feature_scale)
            num_train = self.source.num_train
        else:
            self.source = None
            shape = input_shape_of(config)
            normalization = (np.zeros(shape), np.ones(shape))
            num_train = config.batch_size
        check_memory(config, input_shape_of(config), config.num_classes or 1)
        _check_objective(config)
        self.config = config
        self.plan = plan(config, num_train, self.runtime.num_replicas)
        # multi_worker: creating the variables waits for the other workers (guard_workers).
        with runtime.guard_workers(config, "model"), self.runtime.strategy.scope():
            self._build(config, normalization)
        self._log_model()
        self.checkpoints = self._make_checkpoints()
        self.best_model = self._make_best_model()

    def _build(self, config: Config, normalization) -> None:
        from models import optimizers
        from models.augment import Augmentation
        from trainer import summaries
        from trainer.best_model import EvalTracker
        from trainer.engine.evaluator import Evaluator
        from trainer.engine.trainer import Trainer

        runtime, plan_ = self.runtime, self.plan
        source = self.source
        targets = (source.target_mean, source.target_scale) if source is not None else None
        self.model = build_model(
            config, input_shape_of(config), config.num_classes or 1, normalization, targets
        )
        self.optimizer = optimizers.get(
            config.optimizer, config.learning_rate, config.clip_norm, **config.optimizer_options
        )
        decayed = (
            self.model.trainable_variables
            if config.weight_decay_all
            else self.model.decayed_kernels
        )
        self.optimizer.set_weight_decay(config.weight_decay, decayed)
        self.schedule = make_schedule(config, plan_.total_steps, plan_.steps_per_epoch)
        self.tracker = EvalTracker()
        source = self.source
        self.trainer = Trainer(
            self.model,
            self.optimizer,
            loss=config.loss,
            global_batch_size=plan_.batch_size,
            compute_dtype=runtime.compute_dtype,
            jit_compile=runtime.jit_compile,
            strategy=runtime.strategy,
            skip_nonfinite=config.skip_nonfinite,
            diagnose_every=config.summary_every,
            summary_fn=summaries.step_summary_fn(config.histograms) if runtime.is_chief else None,
            schedule=self.schedule,
            l2=config.l2,
            label_smoothing=config.label_smoothing,
            batches=lambda start: source.train_iterator(
                runtime.strategy, plan_.batch_size, config.seed, start
            ),
            augmentation=Augmentation(config.augment, config.seed) if config.augment else None,
        )
        self.evaluator = Evaluator(
            self.trainer.step_fns.forward,
            self.trainer.objective,
            runtime.strategy,
            config.num_classes,
            dataset=lambda: source.validation_dataset(runtime.strategy),
            counts=self.trainer.trace_counts,
            target_scaling=getattr(self.model, "target_scaling", None),
        )

    def _log_model(self) -> None:
        config = self.config
        extras = "".join(
            f", {name} {value:g}"
            for name, value in (("L2", config.l2), ("label smoothing", config.label_smoothing))
            if value
        )
        logging.info(
            "model: %s %s, %d parameters; optimizer %s (learning rate %s%s); loss %s%s",
            config.model,
            self.model.describe(),
            self.model.count_params(),
            config.optimizer,
            self.schedule.describe(),
            f", weight decay {config.weight_decay:g}" if config.weight_decay else "",
            config.loss,
            extras,
        )

    def _make_checkpoints(self):
        from trainer import checkpoints

        folder = checkpoints.checkpoint_dir(self.config.model_dir)
        # Every worker joins each save; only the chief's files count (see Checkpoints).
        scratch = None
        if not self.runtime.is_chief:
            scratch = os.path.join(folder, f".worker-{self.runtime.task.rpartition(':')[2]}")
        manager = checkpoints.Checkpoints(
            folder,
            keep=self.config.keep_checkpoints,
            scratch_directory=scratch,
            check=self.check_finite,
            identity=run_folder.identity(self.config),
            model=self.model,
            optimizer=self.optimizer,
            global_step=self.trainer.global_step,
            schedule=self.schedule,
            tracker=self.tracker,
        )
        return manager

    def _make_best_model(self):
        from trainer.best_model import BestModel, resolve_metric

        config = self.config
        return BestModel(
            self.tracker,
            resolve_metric(config.best_metric, self.trainer.classification),
            self.checkpoints,
            self.schedule,
            config.lr_plateau_patience,
            config.lr_plateau_factor,
            config.early_stopping_patience,
        )

    def test_data(self):
        """The test split, distributed; ``None`` when the data have none (or are not loaded)."""
        if self.source is None or not self.source.num_test:
            return None
        return self.source.test_dataset(self.runtime.strategy)

    def sample(self):
        """A few raw training examples, to check the model's outputs before a save."""
        if not hasattr(self, "_sample"):
            self._sample = self.source.sample()[0] if self.source is not None else None
        return self._sample

    def check_finite(self, step: int) -> None:
        """What every save (rolling, best, export) checks first: finite weights and outputs."""
        from trainer.checkpoints import check_finite_model

        latest = self.checkpoints.latest if hasattr(self, "checkpoints") else None
        check_finite_model(self.model, f"step {step}", latest, self.sample())
