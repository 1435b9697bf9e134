"""``python -m trainer.main [--flags]``: the thin entry point.

Parses flags (one-line errors, exit status 2), builds the frozen config, then
imports TensorFlow (quietly unless ``--tf_verbose``) and runs the library.

Exit status: 0 done; 2 bad input (flags, data, config.json, checkpoints,
folders); 3 non-finite loss, gradients or weights; 4 a lost or missing
worker; 128 + N stopped by signal N (143 SIGTERM, 130 SIGINT) after saving
what training had done; 1 anything unexpected, still in one line.
"""

from __future__ import annotations

from absl import app, flags, logging

from trainer import config as config_lib
from trainer import flags as trainer_flags  # noqa: F401  (defines the flags)
from trainer.cli import (
    Interrupted,
    end_on_signals,
    exit_now,
    fail,
    fail_interrupted,
    no_positional_arguments,
    parse_flags,
    signal_behind,
)
from trainer.errors import NonFiniteError, TrainingStopped, UsageError, one_line

FLAGS = flags.FLAGS


def main(argv) -> None:
    no_positional_arguments(argv)
    logging.get_absl_handler().use_absl_log_file = False
    with end_on_signals():
        _main()
    exit_now(0)


def _main() -> None:
    config = None
    try:
        config = config_lib.from_flags(FLAGS)
        from trainer import runtime

        runtime.import_tensorflow(verbose=FLAGS.tf_verbose)
        from trainer import train_lib

        explicit = {name for name in FLAGS if FLAGS[name].present}
        try:
            train_lib.run(config, explicit)
        except TrainingStopped as stopped:
            fail(stopped, status=128 + stopped.signum)
        except NonFiniteError as error:
            fail(error, status=3)
        except train_lib.PeerLostError as error:
            fail(error, status=4)
    except UsageError as error:
        fail(error)
    except Interrupted as interrupted:
        fail_interrupted(
            interrupted,
            "stopped; everything saved before is kept (run the same command again to continue)",
        )
    except KeyboardInterrupt:
        fail("interrupted", status=130)
    except Exception as error:  # the last line of defence: one line, never a traceback
        logging.debug("unexpected error", exc_info=True)
        interrupted = signal_behind(error)
        if interrupted is not None:  # e.g. "initialization failed" of a module it stopped
            fail_interrupted(interrupted, "stopped; everything saved before is kept")
        fail(_describe(error, config), status=1)


def _describe(error: Exception, config) -> str:
    """One line for an error nothing else caught."""
    text = one_line(error)
    folder = f" in {config.model_dir}" if config is not None else ""
    if isinstance(error, MemoryError) or "ResourceExhausted" in type(error).__name__:
        return f"out of memory{folder} ({text[:200]}); use smaller layers or batches"
    for symptom in ("No space left on device", "Read-only file system", "Permission denied"):
        if symptom in text:
            return f"cannot write{folder}: {symptom} ({text[:200]}); nothing saved was lost"
    return (
        f"unexpected {type(error).__name__}{folder}: {text[:300]} "
        "(rerun with --verbosity=1 for details)"
    )


def run_main() -> None:
    """Console-script entry point (``trainer``)."""
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run_main()
