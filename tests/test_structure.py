"""The package's walls: one architecture table, no import cycle, the core free of example code."""

import ast
import os
import subprocess
import sys

import optimum_spd
from optimum_spd.architectures import LAYER_LIST_PATHS
from optimum_spd.constants import HEAD_SUFFIXES, SUPPORTED_ARCHITECTURES
from optimum_spd.modeling.registry import BASE_ARCHITECTURES, HEADS, MODEL_CLASSES
from optimum_spd.serialization.format import BASE_MODEL_TYPES

PACKAGE_DIR = os.path.dirname(optimum_spd.__file__)


def test_every_architecture_list_derives_from_the_one_table():
    assert set(LAYER_LIST_PATHS) == set(BASE_ARCHITECTURES) == set(BASE_MODEL_TYPES) == set(SUPPORTED_ARCHITECTURES)
    assert {auto.__name__: suffix for auto, suffix in HEADS.items()} == HEAD_SUFFIXES
    assert set(MODEL_CLASSES) == {(t, s) for t in SUPPORTED_ARCHITECTURES for s in HEAD_SUFFIXES.values()}


def _package_imports() -> dict[str, set[str]]:
    """module -> package modules it imports (module level and inside functions alike)."""
    graph = {}
    for root, _, files in os.walk(PACKAGE_DIR):
        for file in files:
            if not file.endswith(".py"):
                continue
            path = os.path.join(root, file)
            relative = os.path.relpath(path, os.path.dirname(PACKAGE_DIR))[:-3].replace(os.sep, ".")
            module = relative.removesuffix(".__init__")
            package = module if file == "__init__.py" else module.rsplit(".", 1)[0]
            targets = set()
            for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
                if isinstance(node, ast.ImportFrom) and node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    name = ".".join(base + ([node.module] if node.module else []))
                    targets.add(name)
                elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("optimum_spd"):
                    targets.add(node.module)
            graph[module] = targets
    return graph


def test_the_package_has_no_import_cycle():
    graph = _package_imports()

    def resolve(name):  # "optimum_spd.modeling.registry" or a package's __init__
        return name if name in graph else None

    visiting, done, cycles = set(), set(), []

    def visit(module, trail):
        if module in visiting:
            cycles.append(trail[trail.index(module) :] + [module])
            return
        if module in done:
            return
        visiting.add(module)
        for target in sorted(filter(None, map(resolve, graph[module]))):
            # A package's __init__ re-exports its submodules: an edge into the package itself is not a cycle.
            if module.startswith(target + ".") and target != module:
                continue
            visit(target, trail + [module])
        visiting.discard(module)
        done.add(module)

    for module in sorted(graph):
        visit(module, [])
    assert cycles == []


def test_import_optimum_spd_imports_no_task_or_example_code():
    # Our task/example stack only: transformers' Trainer itself may import scipy or sklearn when they are installed.
    code = (
        "import sys, optimum_spd; "
        "print(sorted(m for m in sys.modules if m.startswith(('optimum_spd.tasks', 'evaluate'))))"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.strip() == "[]"
