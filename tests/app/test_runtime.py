from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.runtime import CPU, OnnxRuntime, RuntimeOptions, resolve_provider, sequence_buckets
from app.store import ModelStore

LONG = " ".join(["the battery was great but the case broke after a week"] * 20)


@pytest.fixture(scope="module")
def runtimes(tiny_store: Path) -> dict[str, OnnxRuntime]:
    store = ModelStore(tiny_store)
    return {name: OnnxRuntime(store.load_verified(name, "1"), RuntimeOptions()) for name in store.names()}


def test_sentiment_gives_probabilities_per_label(runtimes: dict[str, OnnxRuntime]) -> None:
    rt = runtimes["review-sentiment"]
    tokens = rt.tokenize(["great sound", "broke after a week", LONG])
    probs = rt.run(tokens, [0, 1, 2])
    assert probs.shape == (3, 2)
    assert probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert tokens.truncated == [False, False, True]
    assert tokens.lengths[2] == rt.max_length


def test_padding_does_not_change_results(runtimes: dict[str, OnnxRuntime]) -> None:
    for name in ("review-sentiment", "product-embedder"):
        rt = runtimes[name]
        tokens = rt.tokenize(["great", "the case broke after a week of use", LONG])
        together = rt.run(tokens, [0, 1, 2])
        for i in range(3):
            np.testing.assert_allclose(rt.run(tokens, [i])[0], together[i], atol=2e-3, err_msg=name)


def test_embeddings_are_unit_length(runtimes: dict[str, OnnxRuntime]) -> None:
    rt = runtimes["product-embedder"]
    emb = rt.run(rt.tokenize(["wireless earbuds", "chef knife"]), [0, 1])
    assert emb.ndim == 2
    assert emb.shape[0] == 2
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-4)


def test_cross_encoder_scores_pairs(runtimes: dict[str, OnnxRuntime]) -> None:
    rt = runtimes["product-reranker"]
    tokens = rt.tokenize([("earbuds", "wireless earbuds with case"), ("earbuds", LONG)])
    scores = rt.run(tokens, [0, 1])
    assert scores.shape == (2, 1)
    assert ((scores > 0) & (scores < 1)).all()
    assert tokens.truncated == [False, True]


def test_sequence_length_cap_and_warmup(tiny_store: Path) -> None:
    verified = ModelStore(tiny_store).load_verified("review-sentiment", "1")
    rt = OnnxRuntime(verified, RuntimeOptions(max_sequence_length=16))
    assert rt.max_length == 16
    assert rt.tokenize([LONG]).lengths == [16]
    rt.warmup(2)


def test_buckets_and_provider_fallback() -> None:
    assert sequence_buckets(64) == [8, 16, 32, 64]
    assert sequence_buckets(100) == [8, 16, 32, 64, 100]
    assert resolve_provider("cpu") == CPU
    assert resolve_provider("cuda") in (CPU, "CUDAExecutionProvider")


@pytest.mark.parametrize(("preset", "expected"), [(None, "false"), ("true", "true")])
def test_the_tokenizers_thread_pool_is_off_unless_the_environment_says_otherwise(
    preset: str | None, expected: str
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TOKENIZERS_PARALLELISM"}
    if preset is not None:
        env["TOKENIZERS_PARALLELISM"] = preset
    probe = "import os, app.runtime; print(os.environ['TOKENIZERS_PARALLELISM'])"
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == expected
