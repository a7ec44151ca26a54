"""Each kustomize overlay renders, validates against the Kubernetes schemas offline, and keeps the
promises the rolling-restart test relies on (grace period, surge-only rollouts, probes, hardening)."""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.ops.tools import REPO, require_tool

OVERLAYS = ("cpu", "gpu")
# The oldest Kubernetes minor we claim to support and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")

Manifest = dict[str, Any]


def render(overlay: str) -> list[Manifest]:
    return kustomize(REPO / "k8s" / "overlays" / overlay)


def kustomize(folder: Path) -> list[Manifest]:
    """The manifests `kubectl kustomize` renders from a kustomization folder."""
    result = subprocess.run(
        [require_tool("kubectl"), "kustomize", str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[Manifest]]:
    name: str = request.param
    return name, render(name)


def one(manifests: list[Manifest], kind: str) -> Manifest:
    found = [m for m in manifests if m["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def container(manifests: list[Manifest]) -> Manifest:
    containers: list[Manifest] = one(manifests, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def settings(manifests: list[Manifest]) -> dict[str, str]:
    data: dict[str, str] = one(manifests, "ConfigMap")["data"]
    return data


def test_overlay_renders_the_whole_application(overlay: tuple[str, list[Manifest]]) -> None:
    _, manifests = overlay
    kinds = sorted(m["kind"] for m in manifests)
    expected = ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service"]
    assert kinds == expected


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_overlay_validates_against_kubernetes_schemas(
    overlay: tuple[str, list[Manifest]], version: str
) -> None:
    _, manifests = overlay
    for manifest in manifests:
        kubernetes_validate.validate(manifest, version, strict=True)


def test_validator_rejects_a_misspelt_field(overlay: tuple[str, list[Manifest]]) -> None:
    _, manifests = overlay
    broken = copy.deepcopy(one(manifests, "Deployment"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {"path": "/readyz"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_grace_period_covers_pre_stop_drain_and_shutdown(overlay: tuple[str, list[Manifest]]) -> None:
    _, manifests = overlay
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    command = container(manifests)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop_s = float(command[1])
    drain_s = float(settings(manifests)["INFERENCE_DRAIN_TIMEOUT_S"])
    shutdown_s = float(settings(manifests)["INFERENCE_SHUTDOWN_TIMEOUT_S"])
    assert pre_stop_s > 0
    assert pod["terminationGracePeriodSeconds"] > pre_stop_s + drain_s + shutdown_s + 1


def test_the_api_token_secret_is_required_and_the_admin_token_optional(
    overlay: tuple[str, list[Manifest]],
) -> None:
    env = {e["name"]: e for e in container(overlay[1])["env"]}
    api = env["INFERENCE_API_TOKEN"]["valueFrom"]["secretKeyRef"]
    admin = env["INFERENCE_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert api["optional"] is False  # no secret: the pod does not start, rather than serving without auth
    assert admin["optional"] is True  # no secret: reload is off
    assert api["name"] != admin["name"]


def test_rollout_only_surges(overlay: tuple[str, list[Manifest]]) -> None:
    _, manifests = overlay
    strategy = one(manifests, "Deployment")["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}


def test_probes_use_the_service_endpoints(overlay: tuple[str, list[Manifest]]) -> None:
    _, manifests = overlay
    server = container(manifests)
    port_names = {port["name"] for port in server["ports"]}
    paths = {}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        http = server[probe]["httpGet"]
        assert http["port"] in port_names
        paths[probe] = http["path"]
    assert paths == {"startupProbe": "/livez", "readinessProbe": "/readyz", "livenessProbe": "/livez"}


def test_container_is_hardened(overlay: tuple[str, list[Manifest]]) -> None:
    _, manifests = overlay
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    server = container(manifests)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    security = server["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    # A read-only root still needs a writable /tmp (Python's tempfile, onnxruntime).
    tmp_mounts = [m["name"] for m in server["volumeMounts"] if m["mountPath"] == "/tmp"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert len(tmp_mounts) == 1
    assert "emptyDir" in volumes[tmp_mounts[0]]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= server["resources"][kind].keys()


def test_objects_point_at_each_other(overlay: tuple[str, list[Manifest]]) -> None:
    """Generated names and label selectors line up after kustomize rewrote them."""
    _, manifests = overlay
    deployment = one(manifests, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    assert one(manifests, "Service")["spec"]["selector"].items() <= pod_labels.items()
    pdb_selector = one(manifests, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"]
    assert pdb_selector.items() <= pod_labels.items()

    config_name = one(manifests, "ConfigMap")["metadata"]["name"]
    env_from = [source["configMapRef"]["name"] for source in container(manifests)["envFrom"]]
    assert env_from == [config_name]

    target = one(manifests, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    service_ports = one(manifests, "Service")["spec"]["ports"]
    assert [p["targetPort"] for p in service_ports] == ["http"]


def test_overlay_sets_its_provider(overlay: tuple[str, list[Manifest]]) -> None:
    name, manifests = overlay
    config = settings(manifests)
    server = container(manifests)
    image: str = server["image"]
    assert image.endswith(f":{name}")
    gpu_limit = server["resources"]["limits"].get("nvidia.com/gpu")
    if name == "gpu":
        assert config["INFERENCE_PROVIDER"] == "cuda"
        assert gpu_limit == "1"
    else:
        assert config["INFERENCE_PROVIDER"] == "cpu"
        assert gpu_limit is None


def test_settings_are_ones_the_service_accepts(overlay: tuple[str, list[Manifest]]) -> None:
    """Every ConfigMap key is a field of app.settings.Settings, and together they pass its checks."""
    from app.settings import Settings

    values = settings(overlay[1])
    fields = {name.removeprefix("INFERENCE_").lower(): value for name, value in values.items()}
    assert all(name.startswith("INFERENCE_") for name in values)
    assert fields.keys() <= Settings.model_fields.keys(), fields.keys() - Settings.model_fields.keys()
    parsed = Settings.model_validate(fields)
    assert parsed.drain_timeout_s == float(values["INFERENCE_DRAIN_TIMEOUT_S"])


def test_gpu_overlay_pins_an_fp16_recipe() -> None:
    config = settings(render("gpu"))
    from app.settings import parse_pins

    pins = parse_pins(config["INFERENCE_PINNED_VERSIONS"])
    assert pins == {"review-sentiment": "2"}
    recipe = yaml.safe_load(
        (REPO / "model_store" / "recipes" / "review-sentiment.fp16-cuda.yaml").read_text()
    )
    assert (recipe["name"], recipe["quantize"]["method"], recipe["provider"]) == (
        "review-sentiment",
        "fp16",
        "CUDAExecutionProvider",
    )
    assert "review-sentiment.fp16-cuda.yaml" in (REPO / "Dockerfile").read_text()


# --- optional pieces: the ServiceMonitor component and the queue-depth autoscaling example ----------

COMPONENTS = REPO / "k8s" / "components"
SERVICE_MONITOR = COMPONENTS / "servicemonitor"
QUEUE_DEPTH_EXAMPLE = REPO / "k8s" / "examples" / "queue-depth-hpa"
# Fields of a ServiceMonitor spec and of one of its endpoints that this component may use (a subset of
# the Prometheus Operator's monitoring.coreos.com/v1 CRD, which kubernetes-validate has no schema for).
_SERVICE_MONITOR_SPEC_FIELDS = {"selector", "endpoints", "namespaceSelector", "jobLabel", "targetLabels"}
_SERVICE_MONITOR_ENDPOINT_FIELDS = {
    "port",
    "path",
    "scheme",
    "interval",
    "scrapeTimeout",
    "honorLabels",
    "relabelings",
    "metricRelabelings",
}


def render_with_components(overlay: str, tmp_path: Path, *components: str) -> list[Manifest]:
    """An overlay plus opt-in components, the way a user's own kustomization would combine them
    (kustomize wants relative paths)."""

    def rel(path: Path) -> str:
        return os.path.relpath(path, tmp_path)

    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [rel(REPO / "k8s" / "overlays" / overlay)],
        "components": [rel(COMPONENTS / name) for name in components],
    }
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return kustomize(tmp_path)


def test_servicemonitor_is_an_opt_in_component() -> None:
    kustomization = yaml.safe_load((SERVICE_MONITOR / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Component"
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1alpha1"
    for name in OVERLAYS:  # no overlay pulls it in: clusters without the Operator's CRD still apply
        overlay_kustomization = yaml.safe_load(
            (REPO / "k8s" / "overlays" / name / "kustomization.yaml").read_text()
        )
        assert "components" not in overlay_kustomization


@pytest.mark.parametrize("overlay_name", OVERLAYS)
def test_servicemonitor_component_scrapes_the_service(overlay_name: str, tmp_path: Path) -> None:
    manifests = render_with_components(overlay_name, tmp_path, "servicemonitor")
    monitors = [m for m in manifests if m["kind"] == "ServiceMonitor"]
    assert len(monitors) == 1
    monitor = monitors[0]
    # The rest of the overlay is unchanged.
    others = [m for m in manifests if m["kind"] != "ServiceMonitor"]
    assert others == render(overlay_name)

    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    assert monitor["metadata"]["name"]
    assert all(isinstance(v, str) for v in monitor["metadata"].get("labels", {}).values())
    spec = monitor["spec"]
    assert set(spec) <= _SERVICE_MONITOR_SPEC_FIELDS, set(spec) - _SERVICE_MONITOR_SPEC_FIELDS
    assert {"selector", "endpoints"} <= spec.keys()

    service = one(manifests, "Service")
    selector = spec["selector"]["matchLabels"]
    assert selector
    assert selector.items() <= service["metadata"]["labels"].items()
    assert set(spec["selector"]) == {"matchLabels"}
    port_names = {port["name"] for port in service["spec"]["ports"]}
    assert spec["endpoints"]
    for endpoint in spec["endpoints"]:
        unknown = set(endpoint) - _SERVICE_MONITOR_ENDPOINT_FIELDS
        assert not unknown, unknown
        assert endpoint["port"] in port_names  # a port *name* of the Service, not a number
        assert endpoint["path"] == "/metrics"
        assert endpoint.get("scheme", "http") in {"http", "https"}
        if "interval" in endpoint and "scrapeTimeout" in endpoint:
            assert _seconds(endpoint["scrapeTimeout"]) <= _seconds(endpoint["interval"])


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for unit in sorted(units, key=len, reverse=True):
        if duration.endswith(unit):
            return float(duration.removesuffix(unit)) * units[unit]
    raise AssertionError(f"not a Prometheus duration: {duration}")


def test_queue_depth_autoscaling_example_parses_and_validates() -> None:
    """The optional prometheus-adapter example (k8s/README.md) stays a valid HPA and adapter config
    for a metric the service exports."""
    from app.metrics import Metrics

    hpa = yaml.safe_load((QUEUE_DEPTH_EXAMPLE / "hpa-queue-depth.yaml").read_text())
    config_map = yaml.safe_load((QUEUE_DEPTH_EXAMPLE / "prometheus-adapter-config.yaml").read_text())
    for manifest in (hpa, config_map):
        kubernetes_validate.validate(manifest, KUBERNETES_VERSIONS[-1], strict=True)

    pods_metrics = [m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert [m["metric"]["name"] for m in pods_metrics] == ["inference_queue_depth"]
    assert pods_metrics[0]["target"]["type"] == "AverageValue"

    base_hpa = yaml.safe_load((REPO / "k8s" / "base" / "hpa.yaml").read_text())
    assert hpa["spec"]["scaleTargetRef"] == base_hpa["spec"]["scaleTargetRef"]

    rules = yaml.safe_load(config_map["data"]["config.yaml"])["rules"]
    published = {rule["name"]["as"]: rule for rule in rules}
    rule = published["inference_queue_depth"]
    assert "inference_queue_depth" in rule["seriesQuery"]
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
    assert rule["resources"]["overrides"]["namespace"] == {"resource": "namespace"}
    for placeholder in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
        assert placeholder in rule["metricsQuery"]
    assert "# TYPE inference_queue_depth gauge" in Metrics().render().decode()
