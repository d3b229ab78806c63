"""A :class:`~leadml.modelling.scorer.LeadScorer` saved as data, and read back without pickle.

The registered model holds this folder (the pyfunc is logged as code, ``leadml.scoring.model_code``):

* ``scorer.json``: every field of the scorer as JSON (features, metadata, tiers, training profile,
  the calibrator, a points sheet), the model's kind, and the SHA-256 of each file beside it;
* ``booster.txt``: a LightGBM model in LightGBM's own text format;
* ``logistic.skops``: a logistic pipeline in skops' format (a zip of JSON and ``.npy`` arrays that
  skops rebuilds without pickle, constructing only the types listed in :data:`TRUSTED_TYPES`);
* ``segment-1/``, ``segment-2/``, ...: the state of each segment's own scorer (``data.segments``),
  as this folder holds the global one's; ``scorer.json`` names them and the SHA-256 of each one's
  ``scorer.json`` (which in turn records its own files').

Reading builds nothing but the types named here from plain values, so a state folder cannot run
code on the machine that loads it, whoever wrote it. A tampered or truncated file is refused by
its recorded digest before it is parsed (:class:`~leadml.errors.ModelIntegrityError`); an export's
``SHA256SUMS`` covers ``scorer.json`` itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from leadml.errors import ModelIntegrityError, NoModelError
from leadml.modelling.calibration import (
    IdentityCalibrator,
    IsotonicCalibrator,
    RelativeCalibrator,
    SigmoidCalibrator,
)
from leadml.modelling.models import LightGBMModel, LogRegModel
from leadml.modelling.points import PointsModel, PointsRule
from leadml.modelling.scorer import LeadScorer, SegmentRouting

FORMAT = "leadml-scorer"
FORMAT_VERSION = 1
STATE_FILE = "scorer.json"
BOOSTER_FILE = "booster.txt"
PIPELINE_FILE = "logistic.skops"
SEGMENT_FOLDER = "segment-{}"  # the state of a segment's own scorer (data.segments), one folder each

# the classes a state file may name ({"__type__": name, "fields": {...}}): plain dataclasses of data
DATA_CLASSES: dict[str, type] = {
    cls.__name__: cls
    for cls in (IdentityCalibrator, SigmoidCalibrator, IsotonicCalibrator, RelativeCalibrator, PointsRule)
}
# skops (~0.9 s to import) is imported where a logistic pipeline is written or read, not by every
# load of a LightGBM model
# the types skops may build for a logistic pipeline (leadml.modelling.models.fit_logreg): skops
# trusts scikit-learn's estimators and NumPy's arrays by itself and asks about these
TRUSTED_TYPES = ("numpy.dtype",)
# the scorer's fields written as they are; the model and the calibrator have their own entries
SCORER_FIELDS = (
    "feature_names",
    "metadata",
    "feature_settings",
    "reference",
    "tiers",
    "trained",
    "request_id",
    "request_synonyms",
    "data_contract",
    "linear_means",
    "accounts",
)


class StateError(NoModelError):
    """A state folder leadml cannot read: written by a newer leadml, or not a scorer's state (exit 2)."""


def write_scorer_state(scorer: LeadScorer, folder: Path) -> Path:
    """Write ``scorer`` into ``folder`` (created; empty or new) as data files; returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    model, files = _model_entry(scorer.model, folder)
    state = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model,
        "calibrator": to_plain(scorer.calibrator, "calibrator"),
        **{name: to_plain(getattr(scorer, name), name) for name in SCORER_FIELDS},
        "files": {name: _digest(folder / name) for name in files},
    }
    if scorer.segments is not None:
        state["segments"] = _segments_entry(scorer.segments, folder)
    text = json.dumps(state, indent=1, allow_nan=True, sort_keys=False)
    (folder / STATE_FILE).write_text(text + "\n", encoding="utf-8")
    return folder


def read_scorer_state(folder: Path) -> LeadScorer:
    """The scorer saved in ``folder`` by :func:`write_scorer_state`, built from data only."""
    path = folder / STATE_FILE
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise StateError(f"{path}: cannot read the model's state ({error.strerror or error})") from None
    except ValueError as error:
        raise ModelIntegrityError(f"{path}: not a model state file (damaged JSON: {error})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise StateError(f"{path}: not a leadml model state (no format {FORMAT!r})")
    if int(state.get("format_version", 0)) > FORMAT_VERSION:
        raise StateError(
            f"{path}: saved in model state format {state['format_version']}, newer than this leadml "
            f"reads ({FORMAT_VERSION}): upgrade leadml to load it"
        )
    _check_files(folder, state.get("files") or {})
    fields = {name: from_plain(state[name], name) for name in SCORER_FIELDS if name in state}
    return LeadScorer(
        model=_model_of(state["model"], folder),
        calibrator=from_plain(state["calibrator"], "calibrator"),
        segments=_segments_of(state["segments"], folder) if state.get("segments") else None,
        **fields,
    )


# --------------------------------------------------------------------------- segment models
def _segments_entry(routing: SegmentRouting, folder: Path) -> dict[str, Any]:
    """Write each segment's scorer into its own folder; the JSON entry that names them."""
    scorers = {}
    for number, (name, scorer) in enumerate(routing.scorers.items(), start=1):
        if scorer.segments is not None:
            raise StateError(f"segment {name!r}: a segment's scorer cannot route to segments of its own")
        sub = SEGMENT_FOLDER.format(number)
        write_scorer_state(scorer, folder / sub)
        scorers[name] = {"folder": sub, "sha256": _digest(folder / sub / STATE_FILE)}
    return {
        "column": routing.column,
        "segment_of": to_plain(dict(routing.segment_of), "segments.segment_of"),
        "scorers": scorers,
    }


def _segments_of(entry: Mapping[str, Any], folder: Path) -> SegmentRouting:
    """The routing :func:`_segments_entry` wrote, each segment's scorer read from its folder after
    its ``scorer.json`` is checked against the digest recorded here."""
    scorers = {}
    for name, record in (entry.get("scorers") or {}).items():
        sub = str(record["folder"])
        if Path(sub).name != sub or sub in ("", ".", ".."):
            raise ModelIntegrityError(
                f"{folder / STATE_FILE}: names a segment folder outside its own ({sub!r})"
            )
        _check_files(folder / sub, {STATE_FILE: str(record["sha256"])})
        scorers[str(name)] = read_scorer_state(folder / sub)
    return SegmentRouting(
        column=str(entry["column"]),
        segment_of={
            str(k): str(v) for k, v in from_plain(entry["segment_of"], "segments.segment_of").items()
        },
        scorers=scorers,
    )


# --------------------------------------------------------------------------- the model
def _model_entry(model: Any, folder: Path) -> tuple[dict[str, Any], list[str]]:
    """The model's JSON entry and the files written beside it."""
    if isinstance(model, LightGBMModel):
        # every tree, as trained; predictions stop at best_iteration
        (folder / BOOSTER_FILE).write_text(model.booster.model_to_string(num_iteration=-1), encoding="utf-8")
        entry = {
            "kind": "lightgbm",
            "booster": BOOSTER_FILE,
            "feature_names": list(model.feature_names),
            "categories": to_plain(model.categories, "model.categories"),
            "best_iteration": int(model.best_iteration),
            "fit_report": to_plain(model.fit_report, "model.fit_report"),
        }
        return entry, [BOOSTER_FILE]
    if isinstance(model, LogRegModel):
        import skops.io

        skops.io.dump(model.pipeline, folder / PIPELINE_FILE)
        entry = {
            "kind": "logistic",
            "pipeline": PIPELINE_FILE,
            "feature_names": list(model.feature_names),
            "categories": to_plain(model.categories, "model.categories"),
        }
        return entry, [PIPELINE_FILE]
    if isinstance(model, PointsModel):
        fields = {
            f.name: to_plain(getattr(model, f.name), f"model.{f.name}") for f in dataclasses.fields(model)
        }
        return {"kind": "points", **fields}, []
    raise StateError(f"cannot save a {type(model).__name__} as model state")


def _model_of(entry: Mapping[str, Any], folder: Path) -> Any:
    kind = entry.get("kind")
    if kind == "lightgbm":
        booster = lgb.Booster(model_str=(folder / entry["booster"]).read_text(encoding="utf-8"))
        return LightGBMModel(
            booster=booster,
            feature_names=list(entry["feature_names"]),
            categories=from_plain(entry["categories"], "model.categories"),
            best_iteration=int(entry["best_iteration"]),
            fit_report=from_plain(entry.get("fit_report") or {}, "model.fit_report"),
        )
    if kind == "logistic":
        return LogRegModel(
            pipeline=_read_pipeline(folder / entry["pipeline"]),
            feature_names=list(entry["feature_names"]),
            categories=from_plain(entry["categories"], "model.categories"),
        )
    if kind == "points":
        names = {f.name for f in dataclasses.fields(PointsModel)}
        return PointsModel(
            **{name: from_plain(entry[name], f"model.{name}") for name in names if name in entry}
        )
    raise StateError(f"model state of an unknown kind {kind!r}")


def _read_pipeline(path: Path) -> Any:
    """The logistic pipeline, built by skops from data; a type outside scikit-learn is refused."""
    import skops.io

    untrusted = [name for name in skops.io.get_untrusted_types(file=path) if name not in TRUSTED_TYPES]
    if untrusted:
        raise ModelIntegrityError(
            f"{path}: holds types leadml never saves ({', '.join(untrusted)}); not loaded"
        )
    return skops.io.load(path, trusted=list(TRUSTED_TYPES))


# --------------------------------------------------------------------------- files and digests
def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_files(folder: Path, recorded: Mapping[str, str]) -> None:
    """Refuse a state whose model file differs from the digest recorded when it was written."""
    for name, digest in recorded.items():
        path = folder / name
        if Path(name).name != name:
            raise ModelIntegrityError(f"{folder / STATE_FILE}: names a file outside its folder ({name!r})")
        if not path.is_file():
            raise ModelIntegrityError(f"{path}: missing; the model's state is incomplete")
        if _digest(path) != digest:
            raise ModelIntegrityError(
                f"{path} changed after the model was saved (its SHA-256 differs from the one in "
                f"{STATE_FILE}): not loaded"
            )


# --------------------------------------------------------------------------- plain values
def to_plain(value: Any, where: str) -> Any:
    """``value`` as JSON values: tuples, arrays, timestamps, non-text keys and the dataclasses of
    :data:`DATA_CLASSES` tagged so that :func:`from_plain` gives them back as they were."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise StateError(f"{where}: an array of {value.dtype} cannot be saved as data")
        return {"__array__": value.dtype.str, "shape": list(value.shape), "values": value.ravel().tolist()}
    if isinstance(value, pd.Timestamp):
        return {"__timestamp__": value.isoformat()}
    if isinstance(value, tuple):
        return {"__tuple__": [to_plain(item, where) for item in value]}
    if isinstance(value, list):
        return [to_plain(item, where) for item in value]
    if isinstance(value, Mapping):
        if all(isinstance(key, str) and not _is_tag(key) for key in value):
            return {key: to_plain(item, f"{where}.{key}") for key, item in value.items()}
        return {"__items__": [[to_plain(key, where), to_plain(item, where)] for key, item in value.items()]}
    name = type(value).__name__
    if dataclasses.is_dataclass(value) and DATA_CLASSES.get(name) is type(value):
        fields = {
            f.name: to_plain(getattr(value, f.name), f"{where}.{f.name}") for f in dataclasses.fields(value)
        }
        return {"__type__": name, "fields": fields}
    raise StateError(f"{where}: a {name} cannot be saved as data")


def _plain_fields(value: Any, where: str) -> dict[str, Any]:
    return {f.name: to_plain(getattr(value, f.name), f"{where}.{f.name}") for f in dataclasses.fields(value)}


def _built(cls: type, fields: Mapping[str, Any], where: str) -> Any:
    """``cls`` from its saved fields; a field the class no longer has is left out."""
    init = {f.name for f in dataclasses.fields(cls) if f.init}
    return cls(**{key: from_plain(item, f"{where}.{key}") for key, item in fields.items() if key in init})


def _is_tag(key: str) -> bool:
    return key.startswith("__") and key.endswith("__")


_TAGS: dict[str, Callable[[Mapping[str, Any], str], Any]] = {
    "__array__": lambda v, where: np.asarray(v["values"], dtype=np.dtype(v["__array__"])).reshape(v["shape"]),
    "__timestamp__": lambda v, where: pd.Timestamp(v["__timestamp__"]),
    "__tuple__": lambda v, where: tuple(from_plain(item, where) for item in v["__tuple__"]),
    "__items__": lambda v, where: {
        from_plain(k, where): from_plain(item, where) for k, item in v["__items__"]
    },
}


def from_plain(value: Any, where: str) -> Any:
    """The value :func:`to_plain` wrote; a tag or class it never writes is refused."""
    if isinstance(value, list):
        return [from_plain(item, where) for item in value]
    if not isinstance(value, dict):
        return value
    tags = [key for key in value if _is_tag(key)]
    if not tags:
        return {key: from_plain(item, f"{where}.{key}") for key, item in value.items()}
    tag = tags[0]
    if tag == "__type__":
        cls = DATA_CLASSES.get(str(value["__type__"]))
        if cls is None:
            raise StateError(f"{where}: names a class leadml never saves ({value['__type__']!r})")
        return _built(cls, value["fields"], where)
    reader = _TAGS.get(tag)
    if reader is None:
        raise StateError(f"{where}: an unknown tag {tag!r}")
    try:
        return reader(value, where)
    except (KeyError, TypeError, ValueError) as error:
        raise StateError(f"{where}: a malformed {tag} value ({error})") from None
