"""A bad request fails only itself: hostile texts sent at once with well-formed ones, fuzzed bodies with
every unicode category (surrogates and control characters included), odd headers, extreme numbers. A real
server process on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.app.server import REPO, Server, run_server

pytestmark = pytest.mark.integration

TOKEN = "hostile-input-token-0123456789"
AUTH = {"authorization": f"Bearer {TOKEN}"}
JSON = {"content-type": "application/json"}

REVIEWS = [
    "Battery died after two days.",
    "Great sound, fits well, and the case is sturdy.",
    "Not worth the money: the left earbud stopped working.",
    "Does exactly what it says. Would buy again.",
]
PRODUCTS = [
    {"id": "buds", "text": "Bluetooth in-ear earbuds with charging case"},
    {"id": "knife", "text": "Stainless steel chef knife, 8 inch"},
    {"id": "mug", "text": "Ceramic coffee mug, 350 ml"},
    {"id": "cable", "text": "USB-C charging cable, braided, 2 m"},
    {"id": "case", "text": "Hard shell carrying case for headphones"},
]

# Texts as a storefront receives them from its users' browsers, written as JSON string bodies (escapes
# included) because a lone surrogate has no UTF-8 form a Python str could be encoded to.
HOSTILE_TEXTS = {
    "lone high surrogate": r'"half an emoji \ud83d then more"',
    "lone low surrogate": r'"\ude00"',
    "surrogates reversed": r'"\ude00\ud83d"',
    "NUL bytes": r'"nul \u0000 inside \u0000"',
    "control characters": r'"bell \u0007 escape \u001b[31m red"',
    "4096 emoji": json.dumps("😀" * 4096),
    "mixed scripts": json.dumps("Отличный товар 很好 ممتاز מצוין 👍🏽 ok"),
    "zero-width only": json.dumps("\u200b\u200c\u200d\ufeff"),
    "bidi overrides": json.dumps("\u202eevil\u202c review"),
    "whitespace only": json.dumps(" \t\n "),
    "empty": json.dumps(""),
}
# Refused with 422 naming the field; the rest are answered (200) as the text they are.
REFUSED = {"lone high surrogate", "lone low surrogate", "surrogates reversed", "whitespace only", "empty"}


def hostile_bodies(hostile: str) -> dict[str, bytes]:
    """One body per endpoint that puts the hostile JSON string where user text goes."""
    products = json.dumps(PRODUCTS[:3])[1:-1]
    return {
        "/v1/sentiment": b'{"texts": ["fine", %s]}' % hostile.encode(),
        "/v1/rank": b'{"query": %s, "candidates": [%s]}' % (hostile.encode(), products.encode()),
        "/v1/rank#cross": (
            b'{"query": "earbuds", "model": "product-reranker", "candidates": [%s, {"id": "x", "text": %s}]}'
            % (products.encode(), hostile.encode())
        ),
        "/v1/recommend": (
            b'{"history": [{"id": "h", "text": %s}], "candidates": [%s]}'
            % (hostile.encode(), products.encode())
        ),
    }


def good_bodies(has_reranker: bool) -> list[tuple[str, dict[str, Any]]]:
    bodies: list[tuple[str, dict[str, Any]]] = []
    for i in range(6):
        bodies.append(("/v1/sentiment", {"texts": [REVIEWS[i % 4], REVIEWS[(i + 1) % 4]]}))
        bodies.append(
            (
                "/v1/rank",
                {"query": ["wireless earbuds", "kitchen knife", "cable"][i % 3], "candidates": PRODUCTS},
            )
        )
        bodies.append(("/v1/recommend", {"history": PRODUCTS[i % 2 : i % 2 + 2], "candidates": PRODUCTS[2:]}))
        if has_reranker:
            bodies.append(
                ("/v1/rank", {"query": "earbuds", "candidates": PRODUCTS, "model": "product-reranker"})
            )
    return bodies


# int8 models quantize activations per token (conversion/token_quant.py), so the company a text keeps in a
# micro-batch (other texts, their padding) moves its answer only by float rounding. With one scale per
# batch (onnxruntime's dynamic quantization, before) it moved by up to 0.03 and flipped a default label.
SAME_ANSWER_ATOL = 1e-4


def comparable(path: str, answer: dict[str, Any]) -> dict[str, Any]:
    """What must not change with the company a request keeps: the label of each text, or the score of
    each candidate id (compared with SAME_ANSWER_ATOL)."""
    results = answer["results"]
    if path == "/v1/sentiment":
        return {f"text {i}": (r["label"], r["score"]) for i, r in enumerate(results)}
    return {r["id"]: ("", r["score"]) for r in results}


def assert_same_answer(got: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    assert got.keys() == expected.keys(), where
    for key, (label, score) in got.items():
        assert label == expected[key][0], (where, key)
        assert abs(score - expected[key][1]) <= SAME_ANSWER_ATOL, (where, key, score, expected[key][1])


STORES = ["tiny", "default"]


@pytest.fixture(scope="module", params=STORES)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if request.param == "tiny":
        store: Path = request.getfixturevalue("tiny_store")
    else:
        store = REPO / "model_store"
        missing = [
            n
            for n in ("review-sentiment", "product-embedder")
            if not any((store / n).glob("*/manifest.json"))
        ]
        if missing:
            pytest.skip(f"model_store/ has no {', '.join(missing)} yet: build it with `make store`")
    with run_server(store, tmp_path_factory.mktemp("logs"), api_token=TOKEN, sessions_per_model=2) as s:
        yield s


def test_hostile_requests_sent_with_good_ones_fail_only_themselves(server: Server) -> None:
    """N well-formed requests and K hostile ones at once, three rounds: every well-formed one gets 200 and
    the answer it gets alone; every hostile one 422 or 200, never a 5xx."""
    with server.client(headers=AUTH) as c:
        has_reranker = any(m["name"] == "product-reranker" for m in c.get("/v1/models").json()["models"])
        good = good_bodies(has_reranker)
        alone = []
        for path, body in good:
            r = c.post(path, json=body)
            assert r.status_code == 200, r.text
            alone.append(comparable(path, r.json()))
    hostile = [
        (name, path.split("#")[0], body)
        for name, text in HOSTILE_TEXTS.items()
        for path, body in hostile_bodies(text).items()
        if has_reranker or not path.endswith("#cross")
    ]

    async def one_round(client: httpx.AsyncClient) -> tuple[list[httpx.Response], list[httpx.Response]]:
        good_calls = [client.post(path, json=body) for path, body in good]
        bad_calls = [client.post(path, content=body, headers=JSON) for _, path, body in hostile]
        answers = await asyncio.gather(*good_calls, *bad_calls)
        return list(answers[: len(good)]), list(answers[len(good) :])

    async def rounds() -> list[tuple[list[httpx.Response], list[httpx.Response]]]:
        limits = httpx.Limits(max_connections=len(good) + len(hostile))
        async with httpx.AsyncClient(
            base_url=server.base_url, headers=AUTH, timeout=60, limits=limits
        ) as client:
            return [await one_round(client) for _ in range(3)]

    for good_answers, bad_answers in asyncio.run(rounds()):
        for (path, _), expected, r in zip(good, alone, good_answers, strict=True):
            assert r.status_code == 200, (path, r.text)
            assert_same_answer(comparable(path, r.json()), expected, path)
        for (name, path, _), r in zip(hostile, bad_answers, strict=True):
            assert r.status_code in (200, 422), (name, path, r.status_code, r.text)
            assert r.status_code == (422 if name in REFUSED else 200), (name, path, r.text)
            if r.status_code == 422:
                error = r.json()["error"]
                assert error["type"] == "invalid_request"
                assert error["message"].split(":")[0] in {"texts.1", "query", "candidates.3", "history.0"}
    assert "inference_failed" not in server.log()


def test_a_lone_surrogate_gets_a_422_that_says_what_and_where(server: Server) -> None:
    body = hostile_bodies(HOSTILE_TEXTS["lone high surrogate"])["/v1/sentiment"]
    r = httpx.post(server.base_url + "/v1/sentiment", content=body, headers={**JSON, **AUTH})
    assert r.status_code == 422
    assert r.json()["error"]["message"].startswith("texts.1: text is not valid Unicode")
    assert "surrogate" in r.json()["error"]["message"]


# --- fuzzing with every unicode category ------------------------------------------------------------------

any_text = st.text(
    alphabet=st.characters(codec=None, categories=["L", "M", "N", "P", "S", "Z", "Cc", "Cf", "Cs", "Co"]),
    max_size=40,
)
item = st.fixed_dictionaries({"id": st.text(min_size=1, max_size=8), "text": any_text})
fuzzed_body = st.one_of(
    st.tuples(st.just("/v1/sentiment"), st.fixed_dictionaries({"texts": st.lists(any_text, max_size=4)})),
    st.tuples(
        st.just("/v1/rank"),
        st.fixed_dictionaries({"query": any_text, "candidates": st.lists(item, max_size=4)}),
    ),
    st.tuples(
        st.just("/v1/recommend"),
        st.fixed_dictionaries(
            {
                "history": st.lists(
                    st.fixed_dictionaries(
                        {"id": st.text(min_size=1, max_size=8), "text": any_text},
                        optional={"weight": st.floats(allow_nan=False) | st.integers(-(10**30), 10**30)},
                    ),
                    max_size=3,
                ),
                "candidates": st.lists(item, max_size=4),
            }
        ),
    ),
)


@pytest.fixture(scope="module")
def tiny_server(tiny_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with run_server(tiny_store, tmp_path_factory.mktemp("logs"), sessions_per_model=2, api_token=TOKEN) as s:
        yield s


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(batch=st.lists(fuzzed_body, min_size=2, max_size=6))
def test_fuzzed_bodies_sent_concurrently_never_get_a_server_error(
    tiny_server: Server, batch: list[tuple[str, dict[str, Any]]]
) -> None:
    """json.dumps escapes surrogates (`\\ud800`), as a JavaScript client does: valid JSON, invalid text."""

    async def send() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=tiny_server.base_url, timeout=60, headers=AUTH) as client:
            calls = [client.post(path, content=json.dumps(body), headers=JSON) for path, body in batch]
            return list(await asyncio.gather(*calls))

    for (path, body), r in zip(batch, asyncio.run(send()), strict=True):
        assert r.status_code < 500, (path, body, r.status_code, r.text)
        assert r.status_code in (200, 422), (path, body, r.status_code, r.text)
        if r.status_code == 200:
            results = r.json()["results"]
            expected = len(body["texts"]) if path == "/v1/sentiment" else len(body["candidates"])
            assert len(results) == expected
        else:
            assert set(r.json()["error"]) == {"type", "message"}


# --- one answer for one request -------------------------------------------------------------------------


def raw_request(server: Server, path: str, header_lines: list[bytes], body: bytes) -> tuple[int, bytes]:
    """Status and body of a request written byte for byte (headers no client library would send)."""
    host, port = server.base_url.removeprefix("http://").split(":")
    head = [b"POST %s HTTP/1.1" % path.encode(), b"Host: 127.0.0.1", b"Connection: close", *header_lines]
    head.append(b"Content-Length: %d" % len(body))
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"\r\n".join(head) + b"\r\n\r\n" + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


PLAIN_JSON = b"Content-Type: application/json"
SUFFIX_JSON = b"Content-Type: application/vnd.storefront+json"
BEARER = b"Authorization: Bearer " + TOKEN.encode()


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([BEARER], 200),
        ([b"Authorization: bearer " + TOKEN.encode()], 200),  # the scheme is case-insensitive
        ([b"Authorization: Bearer   " + TOKEN.encode() + b" \t"], 200),  # whitespace around the token
        ([BEARER, BEARER], 400),  # twice, even when both are right
        ([BEARER, b"Authorization: Bearer wrong-token-0123456789"], 400),
        ([BEARER, b"Content-Type: application/json"], 400),  # a second content type
        ([], 401),
        ([b"Authorization: Bearer"], 401),
        ([b"Authorization: Basic " + TOKEN.encode()], 401),
        ([b"Authorization: Bearer " + TOKEN.encode() + b"\xff"], 401),
        ([b"Authorization: Bearer " + TOKEN.encode()[:-1] + b"\xc3\xa9"], 401),
        ([b"Authorization: Bearer " + TOKEN.encode() + TOKEN.encode()], 401),
    ],
)
def test_odd_headers_get_one_answer_whatever_the_json_content_type(
    tiny_server: Server, headers: list[bytes], status: int
) -> None:
    answers = [
        raw_request(tiny_server, "/v1/sentiment", [content_type, *headers], b'{"texts": ["fine"]}')
        for content_type in (PLAIN_JSON, SUFFIX_JSON)
    ]
    assert answers[0][0] == status, answers[0]
    if status == 200:
        assert json.loads(answers[0][1])["results"] == json.loads(answers[1][1])["results"]
    else:
        assert answers[0] == answers[1]
        assert set(json.loads(answers[0][1])["error"]) == {"type", "message"}


def test_a_million_items_are_refused_without_describing_each(tiny_server: Server) -> None:
    body = b'{"texts": [' + b",".join([b"1"] * 1_000_000) + b"]}"
    assert len(body) < 2 * 1024 * 1024
    status, answer = raw_request(tiny_server, "/v1/sentiment", [PLAIN_JSON, BEARER], body)
    assert status == 422
    message = json.loads(answer)["error"]["message"]
    assert message.startswith("texts: List should have at most 1024 items")
    assert len(answer) < 1000


@pytest.mark.parametrize(
    ("weights", "status"),
    [
        ((1.0, 1.0), 200),
        ((1e20, 1e20), 200),
        ((1e-30, 1e-30), 200),
        ((1e300, 1e300), 200),
        ((3e38, 3e38), 200),  # float32's max: summed in float32 it would overflow to inf
        ((0.0, 0.0), 422),
        ((1.0, -1.0), 422),
    ],
)
def test_extreme_history_weights_give_the_answer_of_their_ratio_or_a_422(
    tiny_server: Server, weights: tuple[float, float], status: int
) -> None:
    history = [{**PRODUCTS[i], "weight": w} for i, w in enumerate(weights)]
    body = {"history": history, "candidates": PRODUCTS[2:]}
    with tiny_server.client(headers=AUTH) as c:
        r = c.post("/v1/recommend", json=body)
        assert r.status_code == status, r.text
        if status == 200:
            plain = c.post("/v1/recommend", json={"history": PRODUCTS[:2], "candidates": PRODUCTS[2:]}).json()
            assert_same_answer(comparable("/v1/recommend", r.json()), comparable("/v1/recommend", plain), "")
            assert all(x["score"] != 0 for x in r.json()["results"])


def test_weights_that_are_not_finite_numbers_are_422(tiny_server: Server) -> None:
    for weight in (b"1e400", b"-1e400", b"NaN", b"Infinity", b"1" + b"0" * 400):
        body = b'{"history": [{"id": "a", "text": "mug", "weight": %s}], '
        body += b'"candidates": [{"id": "b", "text": "cup"}]}'
        status, answer = raw_request(tiny_server, "/v1/recommend", [PLAIN_JSON, BEARER], body % weight)
        assert status == 422, (weight, answer)
        assert json.loads(answer)["error"]["message"].startswith("history.0.weight")


def test_paths_and_headers_cannot_forge_log_lines(tiny_server: Server) -> None:
    forged = "2026-01-01 00:00:00,000 ERROR app.engine [x] forged"
    quoted = forged.replace(" ", "%20")
    r = httpx.post(f"{tiny_server.base_url}/v1/nowhere%0a{quoted}%0d%1b[31m", headers=AUTH, content=b"{}")
    assert r.status_code == 404
    lines = tiny_server.log().splitlines()
    assert not any(line.startswith(forged) for line in lines)
    assert any("/v1/nowhere\\n2026-01-01" in line and "\\r\\x1b[31m" in line for line in lines)


def test_model_reload_is_an_admin_operation(tiny_server: Server) -> None:
    with tiny_server.client(headers=AUTH) as c:
        r = c.post("/v1/models/reload")
    assert r.status_code == 403
    assert r.json()["error"]["type"] == "forbidden"
    assert "INFERENCE_ADMIN_TOKEN" in r.json()["error"]["message"]
    assert "auth on: /v1 and /v2 endpoints need the bearer token" in tiny_server.log()
    assert "model reload off" in tiny_server.log()
