"""Which metric names the alert rules and the dashboard use, and which a /metrics page exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from tests.ops.tools import REPO

MONITORING = REPO / "monitoring"
ALERTS = MONITORING / "alerts.yml"
DASHBOARD = MONITORING / "grafana-dashboard.json"

_NAME = re.compile(r"(?<![\w:])inference_[a-z0-9_]+(?![\w:])")  # not the middle of a recorded name
_TYPE_LINE = re.compile(r"^# TYPE (\S+) (\S+)$", re.MULTILINE)
_SAMPLE_SUFFIXES = {
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "counter": ("", "_created"),
    "gauge": ("",),
    "untyped": ("",),
    "info": ("",),
}


def _strings(node: Any) -> list[str]:
    """Every string in a parsed YAML/JSON document: PromQL, templating queries, annotations."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [text for value in node.values() for text in _strings(value)]
    if isinstance(node, list):
        return [text for item in node for text in _strings(item)]
    return []


def expressions(path: Path) -> list[str]:
    """PromQL of an alert-rules file (`expr`) or a dashboard (panel targets)."""
    if path.suffix in {".yml", ".yaml"}:
        groups = yaml.safe_load(path.read_text())["groups"]
        return [rule["expr"] for group in groups for rule in group["rules"]]
    panels = json.loads(path.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def recorded_names() -> set[str]:
    """Names produced by recording rules (they are not exported by the service)."""
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}


def referenced_names(path: Path) -> set[str]:
    """Every `inference_*` series name an alert-rules file or a dashboard mentions."""
    document = (
        yaml.safe_load(path.read_text()) if path.suffix in {".yml", ".yaml"} else json.loads(path.read_text())
    )
    names = {name for text in _strings(document) for name in _NAME.findall(text)}
    return names - recorded_names()


def exported_series_names(exposition: str) -> set[str]:
    """Series names a Prometheus text page exports, from its `# TYPE` lines (present even for labelled
    metrics with no samples yet), expanded to the sample names PromQL sees (`_bucket`, `_sum`, ...)."""
    names: set[str] = set()
    for family, kind in _TYPE_LINE.findall(exposition):
        for suffix in _SAMPLE_SUFFIXES.get(kind, ("",)):
            names.add(family + suffix)
    return names
