"""SavedModel export in TensorFlow Serving's numbered-version layout.

``export_run(run)`` writes ``<export_dir>/<version>/`` (``saved_model.pb`` and
``variables/``), ``<version>`` being the next integer after the largest numeric
folder already there, starting at 1; older versions stay. The SavedModel is
first written to a hidden temporary sibling folder and then renamed into place,
so TensorFlow Serving (which ignores non-numeric folders) never sees half a
version, even after a crash. That folder, ``.tmp-export-<host>.<pid>.<random>``,
is removed when the export fails or is stopped; one left by an exporter killed
outright (SIGKILL) is removed by the next export into the same folder, its
process being gone (``files.remove_dead_leftovers``), never one still written.

The exported module holds only the model (its ``Normalization`` scaling, its
layers' weights and BatchNorm's moving averages), not the optimizer or the
training program; it runs every layer in inference mode (no dropout, moving
averages). Its one signature, ``serving_default``, takes raw features and
computes in float32 whatever precision training used::

    x: float32 [None, D] (flat models) or [None, H, W, C] (convolutional ones)
    classification -> probabilities: float32 [None, C], classes: [None],
                      class_ids: int64 [None]
    regression     -> predictions:   float32 [None, 1]

``classes`` are the dataset's original labels: int64 class ids ``0..C-1`` for
digits and MNIST, and for a CSV whose labels are names (``setosa``) or other
integers (``3, 12, 40``) those labels, string or int64, looked up from the
vocabulary stored in the SavedModel; ``class_ids`` are always the indices of
``probabilities``.

A model trained on image files (``--dataset=images``, or TFRecords converted
from them) has a second signature, ``serving_bytes``, taking the files as they
are, decoded and resized in-graph by the function training used
(``trainer.data.image_codec.decode``)::

    image_bytes: string [None] (JPEG, PNG, GIF or BMP bytes; TensorFlow Serving's
                 REST API takes them base64-encoded as {"b64": "..."})
    -> the same outputs as serving_default

Bad input is refused inside the serving function, so ``saved_model_cli run``
and TensorFlow Serving report it instead of answering: a wrong width or rank
fails the shape check, and NaN or Inf anywhere in ``x`` fails with
``InvalidArgumentError: x holds NaN or Inf: every raw feature must be a finite
number`` (rather than class 0 with NaN probabilities). Finite features so large
that the model's outputs overflow fail the same way, naming the outputs.
"""

from __future__ import annotations

import contextlib
import os

import tensorflow as tf
from absl import logging

from trainer.deferred_signals import deferred_signals
from trainer.errors import UsageError, one_line
from trainer.files import private_folder, remove_dead_leftovers, writable_folder

SIGNATURE_KEY = "serving_default"
INPUT_NAME = "x"
BYTES_SIGNATURE_KEY = "serving_bytes"
BYTES_INPUT_NAME = "image_bytes"  # TensorFlow Serving base64-decodes inputs named *_bytes
_TEMPORARY_PREFIX = ".tmp-export-"


class ServingModule(tf.Module):
    """What gets saved: the model and a serving function, nothing else.

    Args:
      model: a ``models.Sequential`` taking raw features ``[batch,
        *input_shape]`` and returning logits ``[batch, C]`` (classification)
        or ``[batch, 1]``.
      input_shape: one example's shape, ``(D,)`` or ``(H, W, C)``.
      classification: whether to return ``probabilities``/``classes`` or
        ``predictions``.
      class_names: the original label of each class (strings or integers), or
        ``None`` when the labels are the class ids.
      encoded_image_shape: ``(H, W, C)`` when the model was trained on image
        files: ``serve_bytes`` then takes such files (``image_bytes``).
    """

    def __init__(
        self, model, input_shape, classification: bool, class_names=None, encoded_image_shape=()
    ):
        super().__init__(name="serving")
        self.model = model
        self._classification = bool(classification)
        self.class_names = None
        if class_names is not None:
            names = list(class_names)
            dtype = tf.string if isinstance(names[0], str) else tf.int64
            self.class_names = tf.constant(names, dtype, name="class_names")
        if isinstance(input_shape, int):
            input_shape = (input_shape,)
        self._input_shape = [int(d) for d in input_shape]
        signature = [tf.TensorSpec([None, *self._input_shape], tf.float32, name=INPUT_NAME)]
        # A plain tf.function (no XLA) with a fixed signature: one trace, and a
        # graph that TensorFlow Serving and saved_model_cli can run anywhere.
        self.serve = tf.function(self._serve, input_signature=signature, autograph=False)
        self._image_shape = tuple(int(d) for d in encoded_image_shape or ())
        self.serve_bytes = None
        if self._image_shape:
            files = [tf.TensorSpec([None], tf.string, name=BYTES_INPUT_NAME)]
            self.serve_bytes = tf.function(self._serve_bytes, input_signature=files)

    def _serve_bytes(self, image_bytes):
        """Encoded images ``[batch]`` -> ``_serve``'s outputs, decoded as training did."""
        from trainer.data import image_codec

        height, width, channels = self._image_shape
        images = image_codec.decode_batch(image_bytes, (height, width), channels)
        return self._serve(tf.reshape(images, [-1, *self._input_shape]))

    def _serve(self, x):
        """Maps raw features ``x`` ``[batch, *input_shape]`` to the signature's outputs.

        Raises ``InvalidArgumentError`` (when run) if ``x`` holds NaN or Inf.

        Returns:
          ``{"probabilities": float32 [batch, C], "classes": [batch] (original
          labels), "class_ids": int64 [batch]}`` for classification,
          ``{"predictions": float32 [batch, 1]}`` for regression.
        """
        # Signatures check only the dtype when called; a wrong width would
        # otherwise fail deep inside the model with an unhelpful message.
        x = tf.ensure_shape(x, [None, *self._input_shape], name="check_x_shape")
        # NaN/Inf input would come out as class 0 with NaN probabilities.
        x = tf.debugging.assert_all_finite(
            x, "x holds NaN or Inf: every raw feature must be a finite number", name="check_x"
        )
        # TensorFlow's Conv2D hands an empty batch back unchanged (its input's channels),
        # which breaks the layers after it: an empty request runs one zero example, cut.
        count = tf.shape(x)[0]
        safe = tf.cond(count > 0, lambda: x, lambda: tf.zeros([1, *self._input_shape]))
        outputs = tf.cast(self.model(tf.cast(safe, tf.float32), training=False), tf.float32)
        outputs = outputs[:count]
        outputs = tf.debugging.assert_all_finite(
            outputs,
            "the model's outputs overflowed to NaN or Inf: features of x too large",
            name="check_outputs",
        )
        if self._classification:
            probabilities = tf.cast(self.model.apply_head(outputs), tf.float32)
            class_ids = tf.argmax(outputs, axis=-1, output_type=tf.int64)
            classes = class_ids
            if self.class_names is not None:
                classes = tf.gather(self.class_names, class_ids)
            return {"probabilities": probabilities, "classes": classes, "class_ids": class_ids}
        predictions = tf.cast(self.model.apply_head(outputs), tf.float32)
        scaling = getattr(self.model, "target_scaling", None)
        if scaling is not None:  # trained on standardized targets: back to the data's units
            predictions = scaling(predictions)
        return {"predictions": predictions}


def export_dir_of(config) -> str:
    """``--export_dir``, or ``<model_dir>/export`` when it is not given."""
    return config.export_dir or os.path.join(config.model_dir, "export")


def existing_versions(export_dir: str) -> list[int]:
    """The numeric version folders in ``export_dir``, ascending (``[]`` if none)."""
    try:
        names = os.listdir(export_dir)
    except FileNotFoundError:
        return []
    return sorted(
        int(name)
        for name in names
        if name.isdigit() and os.path.isdir(os.path.join(export_dir, name))
    )


def _folder_label(export_dir: str, config) -> str:
    given = getattr(config, "export_dir", None)
    return f"--export_dir={export_dir}" if given else f"export folder {export_dir}"


@contextlib.contextmanager
def _quiet_tensorflow_info():
    """Hides TensorFlow's own INFO lines while saving (saver timings, fingerprint
    paths naming the temporary folder); ``--verbosity=1`` still shows them."""
    verbosity = logging.get_verbosity()
    if verbosity == logging.INFO:
        logging.set_verbosity(logging.WARNING)
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)


def export_model(
    model,
    export_dir: str,
    input_shape,
    classification: bool,
    config=None,
    class_names=None,
    encoded_image_shape=(),
) -> str:
    """Saves ``model`` as the next version under ``export_dir``; returns its path.

    Args:
      model: a ``models.Sequential`` mapping raw features ``[batch,
        *input_shape]`` to logits ``[batch, C]`` or predictions ``[batch, 1]``.
      export_dir: the folder holding the numbered versions.
      input_shape: one example's shape: the signature's input ``x`` is
        ``[None, *input_shape]`` (an int ``D`` means ``(D,)``).
      classification: export ``probabilities``/``classes`` (True) or
        ``predictions`` (False).
      config: the run's ``Config``, used only to word error messages.
      class_names: the original labels ``classes`` returns (see ``ServingModule``).
      encoded_image_shape: ``(H, W, C)`` to add the ``serving_bytes`` signature.

    Raises:
      UsageError: the folder cannot be created or written.
    """
    writable_folder(export_dir, _folder_label(export_dir, config))
    module = ServingModule(model, input_shape, classification, class_names, encoded_image_shape)
    # Trace outside any summary writer's reach: the export writes no summaries.
    with tf.summary.record_if(False):
        signatures = {SIGNATURE_KEY: module.serve.get_concrete_function()}
        if module.serve_bytes is not None:
            signatures[BYTES_SIGNATURE_KEY] = module.serve_bytes.get_concrete_function()
    # What an exporter killed outright (SIGKILL) left here; never a live one's.
    remove_dead_leftovers(export_dir, _TEMPORARY_PREFIX)
    try:
        # A fresh folder of its own (never a planted link), removed whatever happens.
        with private_folder(export_dir, _TEMPORARY_PREFIX) as temporary:
            os.chmod(temporary, 0o755)  # readable by a serving process of another user
            with _quiet_tensorflow_info(), deferred_signals():
                tf.saved_model.save(module, temporary, signatures=signatures)
            # Another exporter may claim a number between listing and renaming (or
            # a file may hold the name); the rename then fails: try the next number.
            version = 0
            for _ in range(100):
                version = max([*existing_versions(export_dir), version]) + 1
                path = os.path.join(export_dir, str(version))
                try:
                    os.rename(temporary, path)
                    break
                except OSError:
                    if not os.path.exists(path):
                        raise
            else:
                raise OSError(f"no free version number after {version}")
    except (OSError, tf.errors.OpError) as error:
        label = _folder_label(export_dir, config)
        raise UsageError(f"{label}: cannot write ({one_line(error)})") from None
    return path


def export_run(run) -> str:
    """Exports ``run.model`` to ``<export_dir>/<next version>/``; returns that path.

    Only the chief writes; other workers return ``""``. The signature is
    ``serving_default(x: float32 [None, D] or [None, H, W, C])`` returning ``probabilities``
    ``[None, C]`` and ``classes`` int64 ``[None]``, or ``predictions``
    ``[None, 1]`` for a regression (``num_classes == 0``).

    Raises:
      UsageError: the export folder cannot be created or written.
    """
    config = run.config
    if not run.runtime.is_chief:
        logging.info("export: left to the chief worker")
        return ""
    export_dir = export_dir_of(config)
    if not config.export_dir and os.path.islink(export_dir):  # another run's versions?
        raise UsageError(
            f"{export_dir}: is a symbolic link; refusing to add a version through it "
            "(give --export_dir=<its target> to export there)"
        )
    classification = bool(config.num_classes)
    input_shape = list(run.model.input_shape)
    path = export_model(
        run.model, export_dir, input_shape, classification, config, config.class_names,
        config.encoded_image_shape,
    )  # fmt: skip
    outputs = (
        f"probabilities [None, {config.num_classes}], classes [None], class_ids [None]"
        if classification
        else "predictions [None, 1]"
    )
    images = ""
    if config.encoded_image_shape:
        images = (
            f"; {BYTES_SIGNATURE_KEY}: {BYTES_INPUT_NAME} [None] (encoded image files) -> the same"
        )
    logging.info(
        "exported SavedModel version %s to %s (serving_default: x %s -> %s%s); "
        "inspect with: saved_model_cli show --dir %s --all",
        os.path.basename(path),
        path,
        str(["None", *input_shape]).replace("'", ""),
        outputs,
        images,
        path,
    )
    return path
