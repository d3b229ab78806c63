"""Every plot returns a Figure with one line or bar per model, group or reference."""

from __future__ import annotations

from collections.abc import Iterator

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from leadml.data.features import FeatureMeta
from leadml.modelling.evaluate import grouped_shap_importance
from leadml.reporting.plots import (
    equal_mass_calibration_curve,
    gains_figure,
    precision_recall_figure,
    reliability_figure,
    roc_figure,
    shap_beeswarm_figure,
    shap_importance_figure,
)


@pytest.fixture(autouse=True)
def close_figures() -> Iterator[None]:
    yield
    plt.close("all")


@pytest.fixture
def scored() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    probabilities = rng.beta(1, 5, 2000)
    labels = (rng.random(2000) < probabilities).astype("int8")
    return labels, {"oracle": probabilities, "noisy": np.clip(probabilities + rng.normal(0, 0.1, 2000), 0, 1)}


@pytest.mark.parametrize("plot", [reliability_figure, roc_figure, precision_recall_figure, gains_figure])
def test_curve_plots_have_one_line_per_model_plus_the_reference(plot, scored) -> None:
    labels, models = scored
    figure = plot(labels, models)
    assert isinstance(figure, Figure)
    assert len(figure.axes[0].get_lines()) == len(models) + 1


def test_equal_mass_bins_hold_equal_rows() -> None:
    predicted, observed = equal_mass_calibration_curve(
        np.r_[np.zeros(50), np.ones(50)], np.linspace(0, 1, 100), 4
    )
    assert len(predicted) == 4
    np.testing.assert_allclose(observed, [0, 0, 1, 1])


def shap_inputs() -> tuple[np.ndarray, pd.DataFrame, dict[str, FeatureMeta]]:
    rng = np.random.default_rng(0)
    features = pd.DataFrame(
        {
            "visits_7d": rng.poisson(2, 300).astype("float64"),
            "visits_30d": rng.poisson(5, 300).astype("float64"),
            "employees": rng.lognormal(4, 1, 300),
            "industry": pd.Categorical(rng.choice(["saas", "retail", None], 300)),
        }
    )
    metadata = {
        "visits_7d": FeatureMeta("visits_7d", "engagement", "page_view", "{value}"),
        "visits_30d": FeatureMeta("visits_30d", "engagement", "page_view", "{value}"),
        "employees": FeatureMeta("employees", "fit", "employees", "{value}"),
        "industry": FeatureMeta("industry", "fit", "industry", "{value}", kind="categorical"),
    }
    return rng.normal(size=(300, 4)), features, metadata


def test_shap_importance_has_one_bar_per_group() -> None:
    shap_values, features, metadata = shap_inputs()
    importance = grouped_shap_importance(shap_values, list(features.columns), metadata)
    figure = shap_importance_figure(importance)
    assert len(figure.axes[0].patches) == 3
    assert len(shap_importance_figure(importance, top=2).axes[0].patches) == 2


@pytest.mark.parametrize(("by_group", "rows"), [(False, 4), (True, 3)])
def test_beeswarm_draws_one_row_per_feature_or_group(by_group: bool, rows: int) -> None:
    shap_values, features, metadata = shap_inputs()
    figure = shap_beeswarm_figure(shap_values, features, metadata, by_group=by_group)
    assert isinstance(figure, Figure)
    labels = [tick.get_text() for tick in figure.axes[0].get_yticklabels()]
    assert len(labels) == rows
    assert ("page_view" in labels) == by_group
