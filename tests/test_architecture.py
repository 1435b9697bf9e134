"""The shape of the code: the import graph has no cycle, the library never imports
the trainer, only the programs import the command-line module, the modules that
check bad input import no TensorFlow, TensorFlow's internals are reached from one
module, and no function is over 80 lines."""

import ast
import os
import subprocess
import sys

import pytest

from helpers import ROOT

PACKAGES = ("models", "trainer")
# The programs: they alone may import trainer.cli.
PROGRAMS = {"trainer.main", "trainer.convert", "trainer.sweep", "trainer.inspect"}


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def _module_names():
    """``{module name: path}`` of every module of the packages."""
    modules = {}
    for package in PACKAGES:
        for folder, _, files in os.walk(os.path.join(ROOT, package)):
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(folder, name)
                parts = os.path.relpath(path, ROOT)[: -len(".py")].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                modules[".".join(parts)] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    """``{module: modules it imports}`` within the packages, every ``import``
    statement counted (also those inside functions)."""
    modules = _module_names()
    graph = {}
    for name, path in modules.items():
        package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(_read(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                    base = f"{base}.{node.module}" if node.module else base
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def _cycle(graph):
    """One cycle of ``graph`` as a list of modules, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for successor in sorted(graph[node]):
            if state.get(successor) == "open":
                return [*stack[stack.index(successor) :], successor]
            if successor not in state:
                found = visit(successor)
                if found:
                    return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 60  # every module was read
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_library_never_imports_the_trainer():
    graph = import_graph()
    for module, edges in graph.items():
        if module.startswith("models"):
            assert not {e for e in edges if e.startswith("trainer")}, module


def test_only_the_programs_import_the_command_line_module():
    graph = import_graph()
    importers = {module for module, edges in graph.items() if "trainer.cli" in edges}
    assert importers <= PROGRAMS, importers - PROGRAMS


def test_tensorflow_internals_are_reached_from_one_module():
    allowed = os.path.join("trainer", "tf_internals.py")
    libc = os.path.join("trainer", "parent_death.py")  # prctl through ctypes: not TensorFlow
    for name, path in _module_names().items():
        text = _read(path)
        if os.path.relpath(path, ROOT) == allowed:
            assert "tensorflow.python" in text and "ctypes" in text
            continue
        markers = ["tensorflow.python", "pywrap", "tf.compat.v1"]
        if os.path.relpath(path, ROOT) != libc:
            markers.append("import ctypes")
        for marker in markers:
            assert marker not in text, (name, marker)


def test_the_modules_that_check_input_import_no_tensorflow():
    code = (
        "import sys; import models.registry, models.spec, trainer.config, trainer.flags, "
        "trainer.data, trainer.errors, trainer.files, trainer.cluster, trainer.run_folder; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("folder", ["models", "trainer", "scripts"])
def test_no_function_is_over_80_lines(folder):
    for path, dirs, files in os.walk(os.path.join(ROOT, folder)):
        dirs[:] = [d for d in dirs if not d.startswith((".", "__"))]
        for name in files:
            if not name.endswith(".py"):
                continue
            tree = ast.parse(_read(os.path.join(path, name)))
            for node in ast.walk(tree):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    length = node.end_lineno - node.lineno + 1
                    assert length <= 80, (os.path.join(path, name), node.name, length)
