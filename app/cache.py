"""A bounded LRU of text embeddings, shared by /v1/rank and /v1/recommend.

Keyed by (model, version, sha1 of the text): a new version never sees the old version's vectors, and
the cache holds no text. Used from the event loop only, so it needs no lock.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

from app.runtime import FloatArray

CacheKey = tuple[str, str, bytes]


@dataclass(frozen=True)
class CachedEmbedding:
    vector: FloatArray
    truncated: bool
    tokens: int = 0


def text_key(model: str, version: str, text: str) -> CacheKey:
    return (model, version, hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).digest())


class EmbeddingCache:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[CacheKey, CachedEmbedding] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CacheKey) -> CachedEmbedding | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: CacheKey, entry: CachedEmbedding) -> None:
        if self.capacity <= 0:
            return
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def drop_version(self, model: str, version: str) -> int:
        """Forget a retired version's vectors; returns how many were dropped."""
        stale = [k for k in self._entries if k[0] == model and k[1] == version]
        for k in stale:
            del self._entries[k]
        return len(stale)
