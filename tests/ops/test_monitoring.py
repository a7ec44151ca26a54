"""Alert rules pass promtool (syntax and unit tests); the dashboard is well-formed; every metric they
use is one the service defines. The live check against a running server is in test_live_metrics.py."""

from __future__ import annotations

import json
import subprocess

from tests.ops.metric_names import ALERTS, DASHBOARD, MONITORING, exported_series_names, referenced_names
from tests.ops.tools import require_tool


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("promtool"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=MONITORING,
        check=False,
    )


def test_promtool_checks_the_rules() -> None:
    result = _promtool("check", "rules", ALERTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    result = _promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_required_alert_exists() -> None:
    text = ALERTS.read_text()
    for alert in (
        "InferenceHighP99Latency",
        "InferenceHighErrorRatio",
        "InferenceQueueSaturated",
        "InferenceShedding",
        "InferenceModelLoadFailed",
    ):
        assert f"alert: {alert}" in text


def test_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert "datasource" in variables
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
        # Panels stay inside Grafana's 24-column grid.
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24


def test_rules_and_dashboard_use_only_metrics_the_service_defines() -> None:
    from app.metrics import Metrics

    exported = exported_series_names(Metrics().render().decode())
    for source in (ALERTS, DASHBOARD):
        used = referenced_names(source)
        assert used, f"no metric found in {source.name}"
        assert used <= exported, f"{source.name} uses metrics the service does not export: {used - exported}"
