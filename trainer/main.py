"""``python -m trainer.main [--flags]``: the thin entry point.

Parses flags (one-line errors, exit status 2), builds the frozen config, then
imports TensorFlow (quietly unless ``--tf_verbose``) and runs the library.
"""

from __future__ import annotations

import sys

from absl import app, flags, logging

from trainer import config as config_lib
from trainer import flags as trainer_flags  # noqa: F401  (defines the flags)

FLAGS = flags.FLAGS


def fail(message: str, status: int = 2):
    """Ends the program with one line on standard error."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    # The error line is the last word: silence warnings that TensorFlow would
    # print while tearing down objects at exit.
    logging.set_verbosity(logging.FATAL)
    if "tensorflow" in sys.modules:
        sys.modules["tensorflow"].get_logger().setLevel("ERROR")
    sys.exit(status)


def _parse_flags(argv):
    try:
        return FLAGS(argv)
    except flags.Error as error:
        fail(error)


def main(argv) -> None:
    if len(argv) > 1:
        fail(f"unexpected arguments {argv[1:]}; every option is a --flag")
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
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run_main()
