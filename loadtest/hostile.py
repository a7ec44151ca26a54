"""Hostile request bodies for the soak (loadtest/soak.py): text the tokenizer may choke on, bodies that are
not JSON, limits just past their edge, and wrong types. The service must answer each with 200 or a 4xx
(`{"error": ...}`), never a 5xx, and must keep doing so for the whole soak.

Bodies are raw bytes: a lone UTF-16 surrogate cannot be encoded to UTF-8 by Python, so it is sent as the
JSON escape `\\ud800`, which is valid JSON that decodes to a string no UTF-8 encoder accepts. Locust-free, so
tests can import it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

HOSTILE_PREFIX = "hostile:"
MAX_CHARS_PER_TEXT = 4096  # app default INFERENCE_MAX_CHARS_PER_TEXT
MAX_TEXTS_PER_REQUEST = 256  # app default INFERENCE_MAX_TEXTS_PER_REQUEST
MAX_BODY_BYTES = 2 * 1024 * 1024  # app default INFERENCE_MAX_BODY_BYTES

ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff"
MIXED_SCRIPTS = "Отличный товар, 很好用, مرحبا بالجودة, שלום, Καλό προϊόν, ดีมาก, 素晴らしい 👍🏽"
EMOJI = "😀"


@dataclass(frozen=True)
class HostileRequest:
    case: str
    endpoint: str  # sentiment | rank | recommend
    body: bytes
    content_type: str = "application/json"

    @property
    def name(self) -> str:
        """Locust's request name; the soak's recorder tells hostile from normal traffic by its prefix."""
        return f"{HOSTILE_PREFIX} {self.endpoint} {self.case}"


def _dump(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


def _candidates(tag: str, count: int = 3) -> list[dict[str, str]]:
    return [{"id": f"sku-{n}", "text": f"Walnut bookshelf {tag} {n}"} for n in range(count)]


Builder = Callable[[str], HostileRequest]  # tag (varies per request, so caches do not answer) -> request


def _text_cases() -> dict[str, Builder]:
    """Valid JSON of the right shape, with text that is hard to tokenize."""
    return {
        "lone high surrogate": lambda tag: HostileRequest(
            "lone high surrogate", "sentiment", b'{"texts": ["bad \\ud800 text ' + tag.encode() + b'"]}'
        ),
        "lone low surrogate in query": lambda tag: HostileRequest(
            "lone low surrogate in query",
            "rank",
            b'{"query": "earbuds \\udfff '
            + tag.encode()
            + b'", "candidates": '
            + _dump(_candidates(tag))
            + b"}",
        ),
        "half an emoji in history": lambda tag: HostileRequest(
            "half an emoji in history",
            "recommend",
            b'{"history": [{"id": "h-1", "text": "socks \\ud83d '
            + tag.encode()
            + b'"}], "candidates": '
            + _dump(_candidates(tag))
            + b"}",
        ),
        "NUL characters": lambda tag: HostileRequest(
            "NUL characters", "sentiment", _dump({"texts": [f"nul\x00inside\x00{tag}", "\x00" * 64]})
        ),
        "4096 emoji": lambda tag: HostileRequest(
            "4096 emoji", "sentiment", _dump({"texts": [EMOJI * (MAX_CHARS_PER_TEXT - len(tag)) + tag]})
        ),
        "4096 emoji candidates": lambda tag: HostileRequest(
            "4096 emoji candidates",
            "rank",
            _dump({"query": f"smile {tag}", "candidates": [{"id": "e", "text": EMOJI * MAX_CHARS_PER_TEXT}]}),
        ),
        "mixed scripts": lambda tag: HostileRequest(
            "mixed scripts", "sentiment", _dump({"texts": [f"{MIXED_SCRIPTS} {tag}", MIXED_SCRIPTS[::-1]]})
        ),
        "zero-width only": lambda tag: HostileRequest(
            "zero-width only", "sentiment", _dump({"texts": [ZERO_WIDTH * 40]})
        ),
        "zero-width between letters": lambda tag: HostileRequest(
            "zero-width between letters",
            "rank",
            _dump({"query": ZERO_WIDTH.join(f"chair{tag}"), "candidates": _candidates(ZERO_WIDTH)}),
        ),
        "combining marks and bidi overrides": lambda tag: HostileRequest(
            "combining marks and bidi overrides",
            "sentiment",
            _dump({"texts": ["g" + "\u0301\u0316\u0489" * 600 + f"\u202e{tag}\u202c"]}),
        ),
    }


def _limit_cases() -> dict[str, Builder]:
    """Just past each limit, and far past it."""
    return {
        "text one char too long": lambda tag: HostileRequest(
            "text one char too long", "sentiment", _dump({"texts": ["x" * (MAX_CHARS_PER_TEXT + 1)]})
        ),
        "one text too many": lambda tag: HostileRequest(
            "one text too many", "sentiment", _dump({"texts": [f"ok {tag}"] * (MAX_TEXTS_PER_REQUEST + 1)})
        ),
        "20000 candidates": lambda tag: HostileRequest(
            "20000 candidates", "rank", _dump({"query": tag, "candidates": _candidates(tag, 20_000)})
        ),
        "body over the limit": lambda tag: HostileRequest(
            "body over the limit", "sentiment", _dump({"texts": ["y" * (MAX_BODY_BYTES + 16)]})
        ),
        "deeply nested arrays": lambda tag: HostileRequest(
            "deeply nested arrays", "sentiment", b'{"texts": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
        ),
    }


def _fixed(request: HostileRequest) -> Builder:
    return lambda tag: request


def _malformed_cases() -> dict[str, Builder]:
    """Not JSON, or JSON of the wrong shape or types."""
    bad: dict[str, tuple[str, bytes]] = {
        "truncated JSON": ("sentiment", b'{"texts": ["great produ'),
        "trailing comma": ("sentiment", b'{"texts": ["fine",],}'),
        "single quotes": ("rank", b"{'query': 'lamp', 'candidates': []}"),
        "raw NUL byte in JSON": ("sentiment", b'{"texts": ["nul \x00 raw"]}'),
        "invalid UTF-8": ("sentiment", b'{"texts": ["\xff\xfe\xc3\x28"]}'),
        "empty body": ("recommend", b""),
        "NaN and Infinity": (
            "recommend",
            b'{"history": [{"id": "a", "text": "b", "weight": NaN}], '
            b'"candidates": [{"id": "c", "text": "d"}], "top_k": Infinity}',
        ),
        "texts is a string": ("sentiment", b'{"texts": "not a list"}'),
        "texts of numbers": ("sentiment", b'{"texts": [1, 2.5, null, true]}'),
        "texts of lists": ("sentiment", b'{"texts": [["nested"], {"a": 1}]}'),
        "empty texts": ("sentiment", b'{"texts": []}'),
        "body is a list": ("sentiment", b'["texts", "x"]'),
        "body is a number": ("rank", b"12345678901234567890123456789"),
        "top_k is text": (
            "rank",
            b'{"query": "q", "candidates": [{"id": "a", "text": "b"}], "top_k": "ten"}',
        ),
        "negative top_k": ("rank", b'{"query": "q", "candidates": [{"id": "a", "text": "b"}], "top_k": -1}'),
        "huge top_k": ("rank", b'{"query": "q", "candidates": [{"id": "a", "text": "b"}], "top_k": 1e400}'),
        "candidates is an object": ("rank", b'{"query": "q", "candidates": {"id": "a", "text": "b"}}'),
        "empty candidate id": (
            "recommend",
            b'{"history": [{"id": "a", "text": "b"}], "candidates": [{"id": "", "text": "d"}]}',
        ),
        "negative weight": (
            "recommend",
            b'{"history": [{"id": "a", "text": "b", "weight": -3}], '
            b'"candidates": [{"id": "c", "text": "d"}]}',
        ),
        "unknown field": ("sentiment", b'{"texts": ["ok"], "temperature": 0.7}'),
        "model is a number": ("sentiment", b'{"texts": ["ok"], "model": 7}'),
        "unknown model": ("sentiment", b'{"texts": ["ok"], "model": "../../etc/passwd"}'),
        "version zero": ("rank", b'{"query": "q", "candidates": [{"id": "a", "text": "b"}], "version": "0"}'),
    }
    cases = {case: _fixed(HostileRequest(case, endpoint, body)) for case, (endpoint, body) in bad.items()}
    cases["JSON sent as text/plain"] = lambda tag: HostileRequest(
        "JSON sent as text/plain", "sentiment", _dump({"texts": [f"plain {tag}"]}), "text/plain"
    )
    return cases


CASES: dict[str, Builder] = {**_text_cases(), **_limit_cases(), **_malformed_cases()}
# Past-the-limit bodies are megabytes: rarer than the rest, so the hostile users stay a small load.
HEAVY = frozenset({"body over the limit", "20000 candidates", "deeply nested arrays", "one text too many"})


def draw(rng: random.Random) -> HostileRequest:
    """One hostile request; the heavy cases come a quarter as often as the others."""
    names = list(CASES)
    weights = [1 if name in HEAVY else 4 for name in names]
    name = rng.choices(names, weights)[0]
    return CASES[name](f"#{rng.randrange(10**9)}")


def acceptable(status: int) -> bool:
    """What a hostile request may be answered with: 200 or a refusal; a 5xx or no answer (0) is a bug."""
    return status == 200 or 400 <= status < 500
