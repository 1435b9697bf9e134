"""``python -m trainer.main [--flags]``: the thin entry point.

Parses flags (one-line errors, exit status 2), builds the frozen config, then
imports TensorFlow (quietly unless ``--tf_verbose``) and runs the library.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging

from trainer import config as config_lib
from trainer import flags as trainer_flags  # noqa: F401  (defines the flags)
from trainer.cli import fail, no_positional_arguments, parse_flags

FLAGS = flags.FLAGS


def main(argv) -> None:
    no_positional_arguments(argv)
    logging.get_absl_handler().use_absl_log_file = False
    try:
        config = config_lib.from_flags(FLAGS)
        from trainer import runtime

        runtime.import_tensorflow(verbose=FLAGS.tf_verbose)
        from trainer import controller, train_lib

        explicit = {name for name in FLAGS if FLAGS[name].present}
        try:
            train_lib.run(config, explicit)
        except controller.TrainingStopped as stopped:
            logging.info("%s", stopped)
            print(f"stopped: {stopped}", file=sys.stderr)
        except controller.NonFiniteError as error:
            fail(error, status=3)
        except train_lib.PeerLostError as error:
            fail(error, status=4)
    except config_lib.UsageError as error:
        fail(error)
    except KeyboardInterrupt:
        fail("interrupted", status=130)


def run_main() -> None:
    """Console-script entry point (``trainer``)."""
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run_main()
