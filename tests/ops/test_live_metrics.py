"""Every metric name (and label) the alert rules and the dashboard use is exported by a live /metrics."""

from __future__ import annotations

import re

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from loadtest.payloads import Corpus, Payloads
from tests.ops.metric_names import (
    ALERTS,
    DASHBOARD,
    exported_series_names,
    expressions,
    recorded_names,
    referenced_names,
)
from tests.ops.processes import Server

pytestmark = pytest.mark.integration

_SELECTOR = re.compile(r"(?<![\w:])(inference_[a-z0-9_]+)\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_BY = re.compile(r"\bby\s*\(([^)]*)\)")
_NAME = re.compile(r"(?<![\w:])inference_[a-z0-9_]+(?![\w:])")


@pytest.fixture(scope="module")
def exposition(tiny_server: Server) -> str:
    """/metrics after a little traffic on every endpoint, so labelled series have samples."""
    payloads = Payloads(Corpus.load(), seed=7)
    with httpx.Client(base_url=tiny_server.url, timeout=30.0) as client:
        for _ in range(3):
            for endpoint, body in (
                ("sentiment", payloads.sentiment()),
                ("rank", payloads.rank()),
                ("recommend", payloads.recommend()),
            ):
                assert client.post(f"/v1/{endpoint}", json=body).status_code == 200
        response = client.get("/metrics")
    assert response.status_code == 200
    return response.text


def test_every_metric_name_used_is_exported(exposition: str) -> None:
    exported = exported_series_names(exposition)
    for source in (ALERTS, DASHBOARD):
        missing = referenced_names(source) - exported
        assert not missing, f"{source.name} uses metrics /metrics does not export: {sorted(missing)}"


def test_every_label_used_exists_on_its_metric(exposition: str) -> None:
    """Selector matchers name labels the metric has; `by (...)` groups by labels some metric in the
    expression has (a typo there silently collapses a panel or an alert into one series)."""
    labels: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    recorded = recorded_names()
    checked = 0
    for source in (ALERTS, DASHBOARD):
        for expr in expressions(source):
            for name, matchers in _SELECTOR.findall(expr):
                if name not in labels:  # labelled series without samples yet: their names are checked above
                    continue
                used = set(_MATCHER_LABEL.findall(matchers))
                assert used <= labels[name], f"{source.name}: {name} has no label {used - labels[name]}"
                checked += 1
            names = [name for name in _NAME.findall(expr) if name in labels]
            if not names or any(r in expr for r in recorded):
                continue
            available = set().union(*(labels[name] for name in names))
            for clause in _BY.findall(expr):
                grouped = {label.strip() for label in clause.split(",") if label.strip()}
                assert grouped <= available, f"{source.name}: by ({clause}) over {names}"
                checked += 1
    assert checked >= 10
