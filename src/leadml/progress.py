"""Progress bars for loops that can take more than a few seconds (stderr, terminals only)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

# tqdm is imported inside functions: only a run that shows a bar loads it

T = TypeVar("T")


def progress_iter(items: Iterable[T], enabled: bool, description: str, unit: str = "it") -> Iterable[T]:
    """``items`` wrapped in a tqdm bar when ``enabled``; tqdm also stays silent off a terminal."""
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=description, unit=unit, leave=False, disable=None)


def progress_bar(enabled: bool, total: int, description: str, unit: str = "it") -> Any:
    """A tqdm bar to ``update`` by hand when ``enabled`` (a loop that is not an iterable), else None."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit=unit, leave=False, disable=None)
