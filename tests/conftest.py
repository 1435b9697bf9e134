"""Shared test setup: quiet TensorFlow, repository root on the path."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The longest tests first: pytest-xdist hands tests out in collection order, and a
# long test collected last (the walkthrough is the last file) would run alone on
# one worker while the others wait. Sorting is stable and the same in every worker.
LONGEST_FIRST = (
    "test_walkthrough.py::",
    "test_sweep.py::test_a_sweep_killed_half_way",
    "test_benchmark.py::test_one_run",
    "test_distributed.py::test_killing_the_chief",
    "test_checkpoints.py::test_sigkill",
    "test_augment.py::test_sigkill",
    "test_distributed.py::test_two_workers",
    "test_init_study.py::test_one_study",
    "test_records.py::test_sigkill",
    "test_records.py::test_two_workers",
    "test_cli.py::test_readmes_first_command",
    "test_export.py::test_saved_model_cli",
    "test_step.py::test_speculative_calls_end_where",
)


def pytest_collection_modifyitems(items):
    def rank(item):
        for position, key in enumerate(LONGEST_FIRST):
            if key in item.nodeid:
                return position
        return len(LONGEST_FIRST)

    items.sort(key=rank)
