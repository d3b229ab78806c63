"""Self-contained HTML pages: autoescaping templates, inline images, one place for the look.

Every report is one file with its CSS, images (PNG data URIs) and script inline, so it
opens from an e-mail attachment with no network. Templates live in ``leadml/reporting/templates``
and autoescape everything: text from the data (a lead's name, a source, an owner) renders
as text, never as markup.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import io
import math
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
from matplotlib.figure import Figure

# matplotlib.pyplot (its backend, slow to import) is imported inside the one function that needs it

MISSING = "\u2013"  # an en dash where a figure is missing


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("leadml.reporting", "templates"),
        autoescape=True,  # every template, whatever its name: data is never markup
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["finite"] = finite
    env.filters.update(
        number=format_number,
        percent=format_percent,
        money=format_money,
        signed=format_signed,
    )
    return env


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)


def figure_data_uri(figure: Figure, dpi: int = 110, close: bool = True) -> str:
    """The figure as a PNG data URI for an ``<img src>``; closed unless it is used again."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    if close:
        plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def write_page(text: str, path: Path) -> Path:
    """Write the page next to its final name, then rename: a reader never sees half a report.

    A page that cannot be written (disk full) leaves no staging file behind: the error goes on.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.partial")
    try:
        staging.write_text(text, encoding="utf-8")
        staging.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            staging.unlink(missing_ok=True)
        raise
    return path


def finite(value: Any) -> bool:
    """Whether a figure is there to show: a number, not None, NaN or infinite (templates use it too)."""
    return isinstance(value, int | float | np.number) and math.isfinite(float(value))


def format_number(value: Any, digits: int = 0) -> str:
    return MISSING if not finite(value) else f"{float(value):,.{digits}f}"


def format_percent(value: Any, digits: int = 1) -> str:
    """A share (0.123) as a percentage (12.3%)."""
    return MISSING if not finite(value) else f"{100 * float(value):.{digits}f}%"


def format_money(value: Any) -> str:
    return MISSING if not finite(value) else f"${float(value):,.0f}"


def format_signed(value: Any, digits: int = 2) -> str:
    return MISSING if not finite(value) else f"{float(value):+.{digits}f}"
