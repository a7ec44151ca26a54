from __future__ import annotations

import numpy as np

from app.cache import CachedEmbedding, EmbeddingCache, text_key


def _entry(x: float) -> CachedEmbedding:
    return CachedEmbedding(np.full(4, x, dtype=np.float32), False)


def test_least_recently_used_entry_is_evicted() -> None:
    cache = EmbeddingCache(2)
    a, b, c = (text_key("m", "1", t) for t in "abc")
    cache.put(a, _entry(1))
    cache.put(b, _entry(2))
    assert cache.get(a) is not None  # a is now the most recent
    cache.put(c, _entry(3))
    assert cache.get(b) is None
    assert cache.get(a) is not None
    assert cache.get(c) is not None
    assert len(cache) == 2


def test_keys_separate_models_and_versions_and_hold_no_text() -> None:
    assert text_key("m", "1", "x") != text_key("m", "2", "x")
    assert text_key("m", "1", "x") != text_key("n", "1", "x")
    assert b"secret review" not in text_key("m", "1", "secret review")[2]


def test_zero_capacity_disables_and_versions_can_be_dropped() -> None:
    off = EmbeddingCache(0)
    off.put(text_key("m", "1", "x"), _entry(1))
    assert len(off) == 0
    cache = EmbeddingCache(10)
    cache.put(text_key("m", "1", "x"), _entry(1))
    cache.put(text_key("m", "2", "x"), _entry(2))
    assert cache.drop_version("m", "1") == 1
    assert cache.get(text_key("m", "2", "x")) is not None
