"""README's tables of choices, generated from the registries.

    python scripts/docs_tables.py          # rewrites the tables in README.md
    python scripts/docs_tables.py --check  # exit 1 if README.md is out of date

Each table sits between ``<!-- registry:NAME -->`` and ``<!-- /registry:NAME -->``
in README.md; ``tests/test_docs_tables.py`` checks that they match the
registries (``models.registry``, ``trainer.data.SOURCES``). No TensorFlow.
"""

from __future__ import annotations

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from models import registry  # noqa: E402
from trainer.data import SOURCES  # noqa: E402

README = os.path.join(ROOT, "README.md")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _defaults(values: dict, prefix: str = "") -> str:
    def shown(value) -> str:
        if value is None:
            return "required"
        return f"{value:g}" if isinstance(value, float | int) else str(value)

    return ", ".join(f"`--{prefix}{name}` ({shown(v)})" for name, v in values.items()) or "-"


def _code(text: str) -> str:
    return f"`{text}`"


def layers_table() -> str:
    rows = [
        [_code(k.usage.split(" ")[0]), _code(k.example), k.doc, ", ".join(k.options) or "-"]
        for k in registry.LAYERS
        if not k.fixed
    ]
    activations = ", ".join(registry.ACTIVATIONS.names)
    rows.append(["an activation", "`relu`", f"an activation on its own: {activations}", "-"])
    return _table(["token", "example", "layer", "options"], rows)


def models_table() -> str:
    rows = []
    for m in registry.MODELS:
        layers = _code(m.layers) if m.layers else "`--hidden`" if m.takes == "hidden" else "none"
        rows.append([_code(m.name), layers, m.activation, m.init, m.doc])
    header = ["`--model`", "layers before the output layer", "activation", "init", "what"]
    return _table(header, rows)


def optimizers_table() -> str:
    rows = [
        [_code(o.name), f"{o.learning_rate:g}", _defaults(o.hyperparameters), o.doc]
        for o in registry.OPTIMIZERS
    ]
    header = ["`--optimizer`", "default `--learning_rate`", "hyperparameters (defaults)", "update"]
    return _table(header, rows)


def schedules_table() -> str:
    rows = [[_code(s.name), _defaults(s.options, "lr_"), s.doc] for s in registry.SCHEDULES]
    return _table(["`--lr_schedule`", "options (defaults)", "the rate"], rows)


def datasets_table() -> str:
    rows = [[_code(s.name), s.doc, "streamed" if s.streaming else "in memory"] for s in SOURCES]
    return _table(["`--dataset`", "what it reads", "held"], rows)


def augmentations_table() -> str:
    rows = [
        [
            _code(f"{a.name}:{a.option.upper()}" if a.option else a.name),
            f"{a.option} {a.default}" if a.option else "-",
            a.doc,
        ]
        for a in registry.AUGMENTATIONS
    ]
    return _table(["`--augment` token", "default", "what"], rows)


def basics_table() -> str:
    rows = [
        ["`--activation`", ", ".join(_code(a.name) for a in registry.ACTIVATIONS)],
        ["`--init`", ", ".join(_code(i.name) for i in registry.INITIALIZERS)],
        ["`--loss`", ", ".join(f"`{loss.name}` ({loss.doc})" for loss in registry.LOSSES)],
    ]
    return _table(["family", "names"], rows)


def tables() -> dict[str, str]:
    """``{block name: Markdown table}`` for README."""
    return {
        "models": models_table(),
        "layers": layers_table(),
        "datasets": datasets_table(),
        "augmentations": augmentations_table(),
        "optimizers": optimizers_table(),
        "schedules": schedules_table(),
        "basics": basics_table(),
    }


def update(text: str) -> str:
    """``text`` (README) with every registry block replaced by its table.

    Raises:
      ValueError: a table has no block in ``text``.
    """
    for name, table in tables().items():
        pattern = re.compile(
            rf"(<!-- registry:{name} -->\n)(?:.*?\n)?(<!-- /registry:{name} -->)", re.DOTALL
        )
        if not pattern.search(text):
            raise ValueError(f"README.md has no <!-- registry:{name} --> block")
        text = pattern.sub(
            lambda match, table=table: match.group(1) + table + "\n" + match.group(2), text
        )
    return text


def main(argv) -> int:
    with open(README, encoding="utf-8") as handle:
        text = handle.read()
    updated = update(text)
    if "--check" in argv:
        if updated != text:
            print(
                "README.md's tables differ from the registries: run python scripts/docs_tables.py"
            )
            return 1
        return 0
    with open(README, "w", encoding="utf-8") as handle:
        handle.write(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
