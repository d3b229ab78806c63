"""Process-level helpers of leadml.machine."""

from __future__ import annotations

import gc
import weakref

import pytest

from leadml.machine import collecting_only_new_objects


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the garbage collector frees it


def test_collections_inside_skip_older_objects_and_everything_is_collected_again_after() -> None:
    older = _Node()
    older_ref = weakref.ref(older)
    with collecting_only_new_objects():
        assert gc.get_freeze_count() > 0
        newer = _Node()
        newer_ref = weakref.ref(newer)
        del older, newer
        gc.collect()
        assert newer_ref() is None  # garbage made inside is collected inside
        assert older_ref() is not None  # the caller's objects are left alone
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert older_ref() is None  # and collected as usual once out


def test_an_error_inside_still_unfreezes() -> None:
    with pytest.raises(RuntimeError), collecting_only_new_objects():
        raise RuntimeError("boom")
    assert gc.get_freeze_count() == 0
