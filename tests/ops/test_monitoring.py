"""Alert rules pass promtool (syntax and unit tests); the dashboard is well-formed; every metric they
use is one the service defines. The live check against a running server is in test_live_metrics.py."""

from __future__ import annotations

import json
import subprocess

import yaml

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
        "InferenceQueueCapacityMissing",
        "InferenceAvailabilityBudgetBurnFast",
        "InferenceAvailabilityBudgetBurnSlow",
        "InferenceLatencyBudgetBurnFast",
        "InferenceLatencyBudgetBurnSlow",
    ):
        assert f"alert: {alert}" in text


def _alert_names() -> set[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}


def test_every_alert_has_a_test_that_fires_and_one_that_stays_quiet() -> None:
    tests = yaml.safe_load((MONITORING / "alerts_test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test.get("alert_rule_test", [])]
    fires = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    names = _alert_names()
    assert names - fires == set(), "alerts no test sees firing"
    assert names - quiet == set(), "alerts no test sees quiet"
    assert (fires | quiet) <= names, "tests of alerts that do not exist"


def test_queue_saturation_uses_the_exported_capacity() -> None:
    """No hard-coded queue size in the rules: the pod exports its INFERENCE_QUEUE_CAPACITY."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    rule = next(r for g in groups for r in g["rules"] if r.get("alert") == "InferenceQueueSaturated")
    assert "inference_queue_capacity" in rule["expr"]


def test_server_error_rules_leave_out_shedding_and_draining() -> None:
    """429 (shed) and 503 (draining, not ready) never count as server errors."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    for rule in (r for g in groups for r in g["rules"]):
        if "error" in rule.get("record", "") and 'status=~"5.."' in rule["expr"]:
            assert 'status!="503"' in rule["expr"], rule["record"]


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
