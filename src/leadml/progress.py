"""Progress bars for loops that can take more than a few seconds (stderr, terminals only)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def progress_iter(items: Iterable[T], enabled: bool, description: str, unit: str = "it") -> Iterable[T]:
    """``items`` wrapped in a tqdm bar when ``enabled``; tqdm also stays silent off a terminal."""
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=description, unit=unit, leave=False, disable=None)
