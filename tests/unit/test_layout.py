"""The package layout: old module paths (a model pickled before the layered packages) still load, and
imports sit at the top of their module unless they are optional or heavy dependencies."""

from __future__ import annotations

import ast
import importlib
import pickle
from collections.abc import Iterator
from pathlib import Path

import leadml
from leadml.modelling.scorer import LeadScorer

PACKAGE = Path(leadml.__file__).parent
# the only imports allowed inside a function: optional or heavy dependencies, loaded when used
# (each module that has one says why in a comment)
INNER_IMPORTS_ALLOWED = frozenset(
    {
        "mlflow",  # ~1-2 s: off the entry points that do not track
        "sqlalchemy",  # only a SQL source or sink
        "pyspark",  # only score.engine=spark
        "optuna",  # only model search
        "shap",
        "matplotlib",  # pyplot and its backend
        "tqdm",  # only a run that shows a progress bar
        "openpyxl",  # only Excel files
        "requests",  # only a remote tracking server
        "urllib3",
        "fcntl",  # POSIX only
        "hydra",  # only the entry points
        "skops",  # ~0.9 s: only a logistic model's pipeline
    }
)
# per module: leadml packages it may import inside a function (each entry point loads only its stage)
INNER_IMPORTS_ALLOWED_IN = {"cli.py": ("leadml.stages",)}


def test_every_old_module_path_is_the_module_that_moved() -> None:
    for old, new in leadml.MOVED_MODULES.items():
        assert importlib.import_module(f"leadml.{old}") is importlib.import_module(f"leadml.{new}"), old


def test_a_class_pickled_under_its_old_module_path_loads_as_the_same_class() -> None:
    # protocol 0 names a class as "module\\nname": the path before the move, as an old pickle has it
    pickled = pickle.dumps(LeadScorer, protocol=0).replace(b"leadml.modelling.scorer", b"leadml.scorer")
    assert b"cleadml.scorer\nLeadScorer" in pickled
    assert pickle.loads(pickled) is LeadScorer


def test_a_name_that_never_existed_is_still_an_import_error() -> None:
    try:
        importlib.import_module("leadml.no_such_module")
    except ModuleNotFoundError as error:
        assert error.name == "leadml.no_such_module"
    else:
        raise AssertionError("leadml.no_such_module imported")


def _inner_imports(tree: ast.Module, package: str) -> Iterator[tuple[int, str]]:
    """(line, module) of every import inside a function body, nested functions included, once."""
    seen: set[int] = set()
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            if id(node) in seen:
                continue
            seen.add(id(node))
            if isinstance(node, ast.Import):
                yield from ((node.lineno, alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolved against the module's package
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    yield node.lineno, ".".join([*base, *([node.module] if node.module else [])])
                else:
                    yield node.lineno, str(node.module)


def _allowed_inside_a_function(module: str, path: str) -> bool:
    if module.split(".")[0] in INNER_IMPORTS_ALLOWED:
        return True
    return any(
        module == root or module.startswith(root + ".") for root in INNER_IMPORTS_ALLOWED_IN.get(path, ())
    )


def test_imports_inside_functions_are_only_optional_or_heavy_dependencies() -> None:
    # the rule: every other import sits at the top of its module, where a cycle shows at once
    modules = sorted(PACKAGE.rglob("*.py"))
    assert len(modules) > 50, PACKAGE
    refused = []
    for file in modules:
        path = file.relative_to(PACKAGE).as_posix()
        package = ".".join(["leadml", *file.relative_to(PACKAGE).parent.parts])
        tree = ast.parse(file.read_text(encoding="utf-8"), str(file))
        for line, module in sorted(_inner_imports(tree, package)):
            if not _allowed_inside_a_function(module, path):
                refused.append(f"src/leadml/{path}:{line} {module}")
    assert not refused, (
        "imports inside functions that belong at the top of their module (or, for an optional or heavy "
        "dependency, in INNER_IMPORTS_ALLOWED with a comment in the module saying why):\n"
        + "\n".join(refused)
    )
