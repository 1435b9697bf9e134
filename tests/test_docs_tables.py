"""README's tables of choices are the registries' (scripts/docs_tables.py)."""

import subprocess
import sys

from helpers import ROOT


def test_readme_tables_match_the_registries():
    done = subprocess.run(
        [sys.executable, "scripts/docs_tables.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_registered_name_is_in_readme():
    from models import registry
    from trainer.data import SOURCES

    with open(f"{ROOT}/README.md", encoding="utf-8") as handle:
        readme = handle.read()
    for family in (registry.MODELS, registry.OPTIMIZERS, registry.SCHEDULES):
        for entry in family:
            assert f"| `{entry.name}` |" in readme, entry.name
    for name in (*registry.ACTIVATIONS.names, *registry.INITIALIZERS.names, *SOURCES.names):
        assert f"`{name}`" in readme, name
