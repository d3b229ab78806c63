"""``MODEL_CARD.md`` of an exported model, written from its training run alone.

Pure text from what the run logged (config, windows, metrics with intervals, calibration,
tiers, leakage report, SHAP importance, the gate's decision) and what the model holds
(features, tiers, the training window's distributions). No MLflow and no file I/O here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from leadml.modelling.evaluate import FLOOR_TIER, base_rate_drift
from leadml.modelling.scorer import LeadScorer

RUN_ARTIFACTS = (
    "split.json",
    "selection.json",
    "split_purged.json",
    "calibration.json",
    "promotion.json",
    "metrics_comparison.csv",
    "tiers.csv",
    "leakage_report.csv",
    "feature_metadata.json",
    "shap_importance.csv",
)
# a categorical level below this share of the training window is a "population with little data"
SPARSE_SHARE = 0.01
MAX_SPARSE_LEVELS = 4
MAX_SPARSE_FEATURES = 6
TOP_DRIVERS = 10
FAMILY_WORDS = {
    "fit": "fit (who the lead and the company are)",
    "engagement": "engagement (what the lead did, counted as of each date)",
    "source": "source (how the lead came in)",
    "other": "other",
}
USE = """\
## Intended use and users

- **Sales reps and SDRs** rank their open leads by the calibrated probability and read the
  reasons for and against each score before they call.
- **Sales leadership and revenue operations** plan capacity from the tiers and from expected
  conversions (the probabilities are calibrated, so their sum over a group of leads estimates
  how many of them will be won).
- **CRM integrations** score one lead when a form is submitted (the served endpoint) and the
  nightly job scores every open lead (`leadml-score`).

Use it for leads of the same business, sources and markets as the training data, scored as of
a date with the same feature definitions. Do not use it:

- for decisions about a person beyond sales prioritisation (credit, employment, pricing,
  eligibility): it was neither built nor validated for them;
- as a statement of cause: a reason says what moved *this model's* score, not what would make
  the lead buy;
- on leads from a new market, product or lead source that the training window did not contain,
  or after the drift monitor (PSI in the nightly run) reports a large shift, without re-training
  and re-reading this card.
"""


@dataclass(frozen=True)
class CardFacts:
    record: Mapping[str, Any]  # export.json: registry, version, run, aliases, versions
    scorer: LeadScorer
    run: Mapping[str, Any]  # tracking.model_run: config, metrics, datasets
    artifacts: Mapping[str, Any]  # tracking.run_artifacts(run_id, RUN_ARTIFACTS)
    request_example: Mapping[str, Any] | None = None
    recreate: Sequence[str] = ()  # the Hydra overrides that re-create the training config


def render(facts: CardFacts, cfg: Mapping[str, Any] | None = None) -> str:
    """The whole card as Markdown."""
    config = facts.run.get("config") or {}
    sections = [
        _title(facts),
        _summary(facts, config),
        USE,
        _label(config),
        _training_data(facts, config),
        _features(facts, config),
        _performance(facts),
        _calibration(facts),
        _tiers(facts),
        _drivers(facts),
        _gate(facts),
        _limitations(facts, config),
        _how_to_use(facts),
        _recreate(facts, config),
        _files(),
    ]
    return "\n".join(section.rstrip() + "\n" for section in sections if section)


# --------------------------------------------------------------------------- sections
def _title(facts: CardFacts) -> str:
    record = facts.record
    aliases = ", ".join(f"@{a}" for a in record.get("aliases") or []) or "no alias"
    return (
        f"# Model card: {record['registered_model']}, version {record['version']}\n\n"
        f"Exported {record.get('exported_at', '')} from {record.get('source', '')} ({aliases} at export), "
        f"training run `{record.get('run_id', '')}` in {record.get('tracking_uri', '')}; "
        f"leadml {record.get('leadml_version', '?')}, MLflow {record.get('mlflow_version', '?')}.\n"
    )


def _summary(facts: CardFacts, config: Mapping[str, Any]) -> str:
    comparison = _comparison(facts)
    model = _model_name(facts, config)
    lines = ["## Summary", ""]
    what = (
        f"Predicts {_label_phrase(config)}. Model: {model} on {len(facts.scorer.feature_names)} features, "
        f"calibrated with {(_artifact(facts, 'calibration.json') or {}).get('method', 'no calibrator')}."
    )
    lines.append(what)
    if model in comparison.index:
        row = comparison.loc[model]
        baselines = [
            f"{_metric_range(comparison.loc[name], 'roc_auc')} for the {words}"
            for name, words in (("logreg_baseline", "logistic baseline"), ("points_baseline", "points sheet"))
            if name in comparison.index
        ]
        lines.append(
            f"On the out-of-time test window: ROC AUC {_metric_range(row, 'roc_auc')}"
            + (f" against {' and '.join(baselines)}" if baselines else "")
            + f"; expected calibration error {row['ece']:.3f}."
        )
    lines += _segments_and_accounts(facts.scorer)
    promotion = _artifact(facts, "promotion.json") or {}
    if promotion:
        lines.append(
            f"The promotion gate {'promoted it' if promotion.get('promote') else 'did not promote it'}: "
            + "; ".join(promotion.get("reasons") or [])
            + "."
        )
    return "\n".join(lines) + "\n"


def _segments_and_accounts(scorer: Any) -> list[str]:
    """What the model holds beyond one global model: segment models, the account roll-up."""
    lines = []
    routing = getattr(scorer, "segments", None)
    if routing is not None:
        values = ", ".join(sorted(routing.segment_of))
        lines.append(
            f"Segment models: leads whose {routing.column} is {values} are scored by their segment's own "
            f"model ({', '.join(routing.scorers)}), which beat the global model on the segment's test "
            "snapshots; every other lead by the global model."
        )
    accounts = getattr(scorer, "accounts", None) or {}
    if accounts.get("correction"):
        note = str(accounts["correction"].get("note") or "")
        lines.append(
            "Account scores: the nightly job rolls the open leads of each account up into the chance that "
            f"at least one converts, with the dependence between them measured on history ({note})."
        )
    return lines


def _label_phrase(config: Mapping[str, Any]) -> str:
    data = config.get("data") or {}
    horizon = (config.get("features") or {}).get("horizon_days")
    contract = data.get("contract") or {}
    outcomes = contract.get("outcomes") or data.get("outcomes") or {}
    if data.get("kind", "crm") == "crm":
        return f"the probability that an open lead is won within {horizon} days of the date it is scored"
    if isinstance(outcomes, Mapping) and outcomes.get("horizon_days"):
        return (
            f"the probability that a lead reaches an outcome ({_where(outcomes.get('table'))}) "
            f"within {outcomes['horizon_days']} days of its `{contract.get('time', 'time')}`"
        )
    target, positive = contract.get("target"), contract.get("positive")
    return f"the probability that `{target}` is one of {positive}"


def _label(config: Mapping[str, Any]) -> str:
    data = config.get("data") or {}
    features = config.get("features") or {}
    lines = ["## Label", ""]
    if data.get("kind", "crm") == "crm":
        horizon = features.get("horizon_days")
        cadence = features.get("cadence_days")
        lines += [
            f"A training row is a lead that is open on an as-of date (every {cadence} days); its label is 1",
            f"when the CRM records it as won within {horizon} days after that date, else 0. Features",
            "read only events strictly before the as-of date. As-of dates whose horizon reaches past",
            "the end of the data are not used for training: their outcome is not known yet.",
        ]
    else:
        contract = data.get("contract") or {}
        lines.append(
            f"One row per lead (no as-of dates: the table holds each lead once). The model gives "
            f"{_label_phrase(config)}; a lead whose `{contract.get('target')}` is one of "
            f"{contract.get('negative')} is a loss."
        )
        excluded = (data.get("contract") or {}).get("drop")
        if excluded:
            lines.append(f"Columns dropped before training (known only later): {', '.join(excluded)}.")
    return "\n".join(lines) + "\n"


def _training_data(facts: CardFacts, config: Mapping[str, Any]) -> str:
    data = config.get("data") or {}
    split = _artifact(facts, "split.json") or {}
    lines = ["## Training data", "", f"Data set `{data.get('name', '?')}` ({data.get('kind', 'crm')})."]
    sources = _sources(data)
    if sources:
        lines.append("Sources: " + "; ".join(f"{name}: `{where}`" for name, where in sources) + ".")
    lines += ["", "| window | rows | leads | won | rate | as-of dates |", "|---|---:|---:|---:|---:|---|"]
    for window in ("train", "calibration", "test"):
        part = split.get(window)
        if not part:
            continue
        dates = (
            f"{part['first_as_of']} to {part['last_as_of']}"
            if part.get("first_as_of")
            else "- (by row order)"
        )
        lines.append(
            f"| {window} | {part.get('rows', 0):,} | {part.get('leads', 0):,} | {part.get('positives', 0):,} "
            f"| {part.get('rate', 0):.1%} | {dates} |"
        )
    purged = _artifact(facts, "split_purged.json") or {}
    dropped = {k: v for k, v in (purged.get("purged_rows") or {}).items() if v}
    if dropped:
        lines.append(
            "\nRows purged at the window boundaries so that no lead's label overlaps the next window: "
            + ", ".join(f"{k} {v:,}" for k, v in dropped.items())
            + "."
        )
    lines += _procedure(facts)
    digests = facts.run.get("datasets") or {}
    if digests:
        lines.append(
            "\nFingerprints of the rows (MLflow datasets; a re-run on the same data reproduces them): "
            + ", ".join(f"{window} `{digest}`" for window, digest in digests.items())
            + "."
        )
    return "\n".join(lines) + "\n"


def _sources(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    tables = data.get("tables") or {}
    if isinstance(data.get("table"), Mapping):
        tables = {"table": data["table"]}
        for name, join in (data.get("joins") or {}).items():  # lookup tables joined by key
            if isinstance(join, Mapping) and isinstance(join.get("table"), Mapping):
                tables[f"{name} (joined by {join.get('by')})"] = join["table"]
    return [(str(name), _where(spec)) for name, spec in tables.items() if isinstance(spec, Mapping)]


def _where(spec: Any) -> str:
    if not isinstance(spec, Mapping):
        return "outcomes"
    return str(spec.get("path") or spec.get("url") or spec.get("query") or "?")


def _features(facts: CardFacts, config: Mapping[str, Any]) -> str:
    scorer = facts.scorer
    families: dict[str, list[str]] = {}
    for name in scorer.feature_names:
        meta = scorer.metadata.get(name) or {}
        families.setdefault(str(meta.get("family", "other")), []).append(str(meta.get("group", name)))
    lines = ["## Features", "", f"{len(scorer.feature_names)} features, grouped by family (and by the column"]
    lines.append("or activity channel each is derived from; reasons quote these groups):")
    lines.append("")
    for family, groups in sorted(families.items(), key=lambda item: -len(item[1])):
        unique = list(dict.fromkeys(groups))
        lines.append(
            f"- **{FAMILY_WORDS.get(family, family)}**: {_count(len(groups), 'feature')} from "
            f"{_count(len(unique), 'column or channel', 'columns or channels')}: {', '.join(unique)}"
        )
    excluded = list((config.get("features") or {}).get("exclude") or [])
    if excluded:
        lines.append(f"\nLeft out by configuration (`features.exclude`): {', '.join(excluded)}.")
    settings = scorer.feature_settings or {}
    if settings:
        lines.append(
            f"\nActivity counts over {', '.join(str(w) for w in settings.get('windows_days', []))} days, "
            f"recency-weighted counts (half-life {settings.get('half_life_days')} days), velocity and "
            "days since the last activity of each kind; no name, e-mail or phone is a feature "
            "(the e-mail's domain gives a corporate-address flag)."
        )
    return "\n".join(lines) + "\n"


def _performance(facts: CardFacts) -> str:
    comparison = _comparison(facts)
    if comparison.empty:
        return ""
    lines = [
        "## Performance on the test window",
        "",
        "Out of time: trained on the earlier windows only. 95% intervals by bootstrap over leads.",
        "",
        "| model | ROC AUC | PR AUC | log loss | Brier | ECE |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in comparison.iterrows():
        lines.append(
            f"| {name} | {_metric_range(row, 'roc_auc')} | {_metric_range(row, 'pr_auc')} "
            f"| {row['log_loss']:.4f} | {row['brier']:.4f} | {row['ece']:.4f} |"
        )
    lines.append(
        "\n`logreg_baseline` is a regularised logistic regression on the same features, "
        "`points_baseline` the data config's hand-written points sheet, `base_rate` the training "
        "rate for everyone"
        + (", `oracle` the generator's true probabilities" if "oracle" in comparison.index else "")
        + "."
    )
    return "\n".join(lines) + "\n"


def _calibration(facts: CardFacts) -> str:
    calibration = _artifact(facts, "calibration.json") or {}
    if not calibration:
        return ""
    lines = [
        "## Calibration",
        "",
        f"Method: {calibration.get('method')} ({calibration.get('chosen_by', 'configured')}), fitted on "
        f"{calibration.get('calibration_window', 'the calibration window')}.",
    ]
    if calibration.get("verdict"):
        lines.append(f"Verdict on the test window: {calibration['verdict']}.")
    return "\n".join(lines) + "\n"


def _tiers(facts: CardFacts) -> str:
    stored = facts.scorer.tiers or {}
    table = _artifact(facts, "tiers.csv")
    lines = ["## Tiers", ""]
    if stored:
        minimums = ", ".join(f"{tier} >= {p:.3f}" for tier, p in stored.get("thresholds", {}).items())
        lines.append(
            f"Stored in the model: {minimums}, else {stored.get('floor_tier', FLOOR_TIER)} "
            f"({stored.get('note', '')})."
        )
        lines.append("The served model tiers with these; the nightly job with `conf/tiers` of its own run.")
    if isinstance(table, pd.DataFrame) and not table.empty:
        lines += ["", "| tier | test rows | won | conversion (95% interval) | mean probability |"]
        lines.append("|---|---:|---:|---|---:|")
        for _, row in table.iterrows():
            lines.append(
                f"| {row['tier']} | {int(row['rows']):,} | {int(row['positives']):,} | "
                f"{row['conversion_rate']:.1%} [{row['conversion_low']:.1%}, {row['conversion_high']:.1%}] "
                f"| {row['mean_probability']:.1%} |"
            )
    return "\n".join(lines) + "\n"


def _drivers(facts: CardFacts) -> str:
    importance = _artifact(facts, "shap_importance.csv")
    if not isinstance(importance, pd.DataFrame) or importance.empty:
        return ""
    lines = [
        "## What drives the score",
        "",
        f"Mean |SHAP| of each column or channel on the test window, in log-odds ({_explanation(facts)}):",
        "",
    ]
    for _, row in importance.head(TOP_DRIVERS).iterrows():
        lines.append(f"- {row['group']}: {row['mean_abs_shap']:.3f} ({row['share']:.0%} of the total)")
    return "\n".join(lines) + "\n"


def _explanation(facts: CardFacts) -> str:
    return getattr(facts.scorer, "explanation_method", None) or "exact TreeSHAP"


def _gate(facts: CardFacts) -> str:
    promotion = _artifact(facts, "promotion.json") or {}
    if not promotion:
        return ""
    before = promotion.get("champion_before")
    lines = [
        "## Promotion gate",
        "",
        f"Decision: **{'promoted' if promotion.get('promote') else 'not promoted'}** "
        f"(champion before: {'version ' + str(before) if before else 'none'}).",
        "",
    ]
    lines += [f"- {reason}" for reason in promotion.get("reasons") or []]
    return "\n".join(lines) + "\n"


def _limitations(facts: CardFacts, config: Mapping[str, Any]) -> str:
    lines = ["## Known limitations", ""]
    split = _artifact(facts, "split.json") or {}
    drift = base_rate_drift(split) if {"train", "calibration", "test"} <= set(split) else {}
    if drift.get("sentence"):
        lines.append(f"- **Drift between the windows**: {drift['sentence']}")
    leakage = _artifact(facts, "leakage_report.csv")
    if isinstance(leakage, pd.DataFrame) and "flagged" in leakage.columns:
        flagged = leakage[leakage["flagged"].astype(str).str.lower() == "true"]
        excluded = set(facts.scorer.feature_names)
        for _, row in flagged.iterrows():
            kept = "kept in the model" if row["feature"] in excluded else "left out of the model"
            lines.append(f"- **Leakage sentinel** flagged `{row['feature']}` ({kept}): {row['reason']}")
    sparse = sparse_levels((facts.scorer.reference or {}).get("features") or {})
    if sparse:
        lines.append(
            f"- **Populations with little data** (under {SPARSE_SHARE:.0%} of the training window's rows; "
            "their scores rest on few examples): "
            + "; ".join(f"{name}: {', '.join(levels)}" for name, levels in sparse.items())
        )
    table = _artifact(facts, "tiers.csv")
    if isinstance(table, pd.DataFrame) and not table.empty:
        thin = table[table["positives"] < 30]
        if not thin.empty:
            lines.append(
                "- **Tiers measured on few wins** (under 30 in the test window; wide intervals): "
                + ", ".join(f"{r['tier']} ({int(r['positives'])} won)" for _, r in thin.iterrows())
            )
    lines.append(
        "- Category levels never seen in training are scored as unknown (the served model and the "
        "nightly job both say so). The model knows only what the CRM recorded: activity that was not "
        "tracked, and fields sales fill in late, weaken it."
    )
    comparison = _comparison(facts)
    if "oracle" in comparison.index:
        gap = comparison.loc["oracle", "roc_auc"] - comparison.loc[_model_name(facts, config), "roc_auc"]
        lines.append(f"- Synthetic data: the generator's true probabilities reach {gap:.3f} more ROC AUC.")
    return "\n".join(lines) + "\n"


def sparse_levels(profiles: Mapping[str, Any], share: float = SPARSE_SHARE) -> dict[str, list[str]]:
    """Per categorical feature, its rarest levels below ``share`` of the training rows (a few).

    ``profiles`` is the training window's feature profile (``LeadScorer.reference["features"]``).
    """
    found: dict[str, list[str]] = {}
    for name, profile in profiles.items():
        if len(found) == MAX_SPARSE_FEATURES:
            break
        if profile.get("kind") != "categorical":
            continue
        rare = sorted(
            ((level, value) for level, value in profile["shares"].items() if 0 < value < share),
            key=lambda item: item[1],
        )
        rare = [(level, value) for level, value in rare if not level.startswith("__")]
        if rare:
            shown = [f"{level} ({_share(value)})" for level, value in rare[:MAX_SPARSE_LEVELS]]
            if len(rare) > MAX_SPARSE_LEVELS:
                shown.append(f"{len(rare) - MAX_SPARSE_LEVELS} more")
            found[name] = shown
    return found


def _how_to_use(facts: CardFacts) -> str:
    folder = f"models/{facts.record['registered_model']}-v{facts.record['version']}"
    lines = ["## How to use this folder", ""]
    if facts.scorer.feature_settings:
        lines += [
            "Nightly scoring without the tracking server (same rows as scoring from the registry):",
            "",
            "```bash",
            f"leadml-score model_uri={folder}",
            "```",
        ]
    else:
        lines += [
            "This model was trained on a flat table (one row per lead), so it scores its features as",
            "they are: `mlflow.pyfunc.load_model(folder).predict(frame)` with the model's feature",
            "columns (`features` in `artifacts/leadml_model.json`), or the endpoint below",
            "(`leadml-score` builds features from CRM tables).",
        ]
    lines += [
        "",
        "A real-time endpoint (MLflow's scoring server, in the environment where leadml is installed):",
        "",
        "```bash",
        f"mlflow models serve -m {folder} --env-manager local --host 127.0.0.1 --port 5001",
        "```",
    ]
    if facts.request_example is not None:
        lines += [
            "",
            "One lead with its recent activities (`request_example.json` in this folder; `as_of` is",
            "optional and defaults to now):",
            "",
            "```bash",
            "curl -s http://127.0.0.1:5001/invocations -H 'Content-Type: application/json' \\",
            "     -d @request_example.json",
            "```",
            "",
            "```json",
            json.dumps({"dataframe_records": [facts.request_example]}, indent=2),
            "```",
        ]
    lines += [
        "",
        "Precomputed features work too: send the model's feature columns (`features` in",
        "`artifacts/leadml_model.json`, an example in `input_example.json`); fields the model does not",
        "know are ignored. Each answer row holds `probability`, `tier`, `fit_score`,",
        "`engagement_score`, `positive_reason_1..3` and `negative_reason_1..3` with their contributions",
        "in log-odds, every group's contribution (`group:*`), and `warnings` (fields not given, unseen",
        "levels, activities after `as_of`). Send a lead's earlier answer back as `previous_answer` and",
        '`margin_change` and `movement` say why it moved since ("rose 12 points: ...").',
        "A request the model cannot score gets HTTP 400 with a message naming the row and field.",
    ]
    return "\n".join(lines) + "\n"


def _recreate(facts: CardFacts, config: Mapping[str, Any]) -> str:
    lines = ["## How to re-create it", ""]
    if facts.recreate:
        command = " ".join(o if o.startswith("#") else _quoted(o) for o in facts.recreate)
        lines += [
            f"From the repository at leadml {facts.record.get('leadml_version', '')}, on the same data:",
            "",
            "```bash",
            f"leadml-train {command}",
            "```",
            "",
            "These overrides turn the defaults into this run's configuration (`config.yaml` of the run "
            "holds all of it); the dataset fingerprints above tell whether the rows are the same.",
        ]
    else:
        lines.append("The run's `config.yaml` holds the whole configuration.")
    return "\n".join(lines) + "\n"


def _files() -> str:
    return (
        "## Files and integrity\n\n"
        "`SHA256SUMS` lists the SHA-256 of every file here; leadml and the served model refuse to load "
        "the folder when one differs, is missing or was added (`sha256sum -c SHA256SUMS` checks it by "
        "hand). It catches accidents, not an attacker who can rewrite `SHA256SUMS` too.\n\n"
        "The model holds no pickle: `model_code.py` builds leadml's pyfunc from the installed leadml, "
        "which reads the model from data files in `artifacts/leadml_state/` (JSON, LightGBM's text "
        "model or skops' format) and runs no code found in the folder. It loads with "
        "`MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false`.\n"
    )


# --------------------------------------------------------------------------- helpers
def _share(value: float) -> str:
    return f"{value:.1%}" if value >= 0.001 else "<0.1%"


def _count(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n} {singular if n == 1 else plural or singular + 's'}"


def _procedure(facts: CardFacts) -> list[str]:
    """How the model was chosen, and what the registered refit was trained on."""
    lines: list[str] = []
    selection = _artifact(facts, "selection.json") or {}
    if selection.get("sentence"):
        lines.append(
            "\nModel selection, on the rows before the test window only: the procedure "
            f"{selection['sentence']}."
        )
    trained = getattr(facts.scorer, "trained", None) or {}
    if trained.get("refit"):
        span = ""
        if trained.get("through") is not None:
            span = f", {trained['position_column']} {trained['first']} to {trained['through']}"
        lines.append(
            "\nThe test-window figures below are those of the procedure fitted on the rows before the "
            "test window. **This model is the same procedure refitted on every labelled row**: "
            f"{trained['rows']:,} rows, {trained['positives']:,} won ({trained['rate']:.1%}){span}; its "
            "calibrator was fitted on out-of-sample predictions of the latest rows."
        )
    return lines


def _artifact(facts: CardFacts, name: str) -> Any:
    return facts.artifacts.get(name)


def _comparison(facts: CardFacts) -> pd.DataFrame:
    table = _artifact(facts, "metrics_comparison.csv")
    if not isinstance(table, pd.DataFrame) or table.empty:
        return pd.DataFrame()
    first = table.columns[0]
    return table.set_index(first)


def _model_name(facts: CardFacts, config: Mapping[str, Any]) -> str:
    return str((config.get("model") or {}).get("name") or "lightgbm")


def _metric_range(row: pd.Series, metric: str) -> str:
    low, high = row.get(f"{metric}_low"), row.get(f"{metric}_high")
    if low is None or high is None or np.isnan(low) or np.isnan(high):
        return f"{row[metric]:.3f}"
    return f"{row[metric]:.3f} [{low:.3f}, {high:.3f}]"


def _quoted(override: str) -> str:
    """A Hydra override as one shell word."""
    if all(c.isalnum() or c in "._-=/:,[]+@" for c in override):
        return override
    return "'" + override.replace("'", "'\\''") + "'"


def config_differences(
    logged: Mapping[str, Any], defaults: Mapping[str, Any], groups: Iterable[str] = ()
) -> list[str]:
    """``key=value`` overrides that turn ``defaults`` into ``logged`` (group choices first).

    Only keys present in both are compared (a key the current leadml no longer knows cannot be
    set; one it added keeps its default). Values are written in Hydra's override grammar.
    """
    flat_logged, flat_defaults = _flatten(logged), _flatten(defaults)
    overrides = list(groups)
    for key in sorted(flat_logged.keys() & flat_defaults.keys()):
        if flat_logged[key] != flat_defaults[key]:
            overrides.append(f"{key}={_hydra_value(flat_logged[key])}")
    return overrides


def unshared_keys(first: Mapping[str, Any], second: Mapping[str, Any]) -> set[str]:
    """Flattened keys that only one of two configs has."""
    return set(_flatten(first)) ^ set(_flatten(second))


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _hydra_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{k}:{_hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    text = str(value)
    if text and all(c.isalnum() or c in "._-/:" for c in text) and text not in ("null", "true", "false"):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
