"""The package layout: old module paths (a model pickled before the layered packages) still load."""

from __future__ import annotations

import importlib
import pickle

import leadml
from leadml.modelling.scorer import LeadScorer


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
