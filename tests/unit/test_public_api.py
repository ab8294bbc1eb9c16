"""The lazy re-exports of ``mlsup.kit`` and ``mlsup``: every listed name resolves, and the
lists agree."""

from __future__ import annotations

import mlsup
import mlsup.kit


def test_kit_all_lists_exactly_the_lazy_names() -> None:
    assert mlsup.kit.__all__ == sorted(mlsup.kit._LAZY)
    for name in mlsup.kit.__all__:
        assert getattr(mlsup.kit, name) is not None, name


def test_mlsup_reexports_resolve_to_the_kit() -> None:
    assert set(mlsup.kit.__all__) >= mlsup._KIT
    assert set(mlsup.__all__) >= mlsup._KIT
    for name in mlsup._KIT:
        assert getattr(mlsup, name) is getattr(mlsup.kit, name), name
