"""leadml: calibrated, explained, point-in-time predictive lead scoring.

The package is layered (README "Layout"): ``stages`` (the I/O shells of the entry points) over
``scoring`` and ``reporting``, over ``modelling``, over ``data``; ``adapters`` hold every outside
system. Until version 0.1 the modules sat in one flat package, and a model registered then holds
pickled references to those paths (``leadml.pyfunc.LeadScorerModel``, ``leadml.scorer.LeadScorer``):
the finder below answers an old path with the module's new home, so such a champion still loads.
The finder imports nothing itself, so it adds no import between the layers.

Importing leadml also makes idle OpenMP threads sleep rather than spin (``OMP_WAIT_POLICY``,
unless the environment sets it): see :mod:`leadml.machine`, which must run before LightGBM loads.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType

from leadml.machine import default_wait_policy

default_wait_policy()

__version__ = "0.2.0"

# module paths before the layered packages -> where each module lives now
MOVED_MODULES = {
    "schema": "data.schema",
    "calendar": "data.calendar",
    "arrays": "data.arrays",
    "contracts": "data.contracts",
    "ingest": "data.ingest",
    "joins": "data.joins",
    "synthetic": "data.synthetic",
    "features": "data.features",
    "split": "modelling.split",
    "guards": "modelling.guards",
    "models": "modelling.models",
    "points": "modelling.points",
    "calibration": "modelling.calibration",
    "evaluate": "modelling.evaluate",
    "selection": "modelling.selection",
    "train": "modelling.train",
    "backtest": "modelling.backtest",
    "scorer": "modelling.scorer",
    "treeshap": "modelling.treeshap",
    "linear_explain": "modelling.linear_explain",
    "buckets": "scoring.pandas_engine",
    "spark_engine": "scoring.spark_engine",
    "serving": "scoring.requests",
    "pyfunc": "scoring.pyfunc",
    "sources": "adapters.sources",
    "sinks": "adapters.sinks",
    "tracking": "adapters.tracking",
    "report": "reporting.leadership",
    "model_report": "reporting.model_report",
    "model_card": "reporting.model_card",
    "forecast": "reporting.forecast",
    "explore": "reporting.explore",
    "plots": "reporting.plots",
    "html": "reporting.html",
    "export": "stages.export",
    "init_config": "stages.init",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import leadml.pyfunc`` (an old path, e.g. from a pickled model) gives ``leadml.scoring.pyfunc``."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        prefix, _, name = fullname.partition(".")
        if prefix != __name__ or name not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(f"{__name__}.{MOVED_MODULES[spec.name.partition('.')[2]]}")

    def exec_module(self, module: ModuleType) -> None:
        """The module is the new one, already executed."""


if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())
