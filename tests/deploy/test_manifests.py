"""deploy/k8s: both overlays render, validate against the Kubernetes 1.32 schemas, pass checkov (waivers
need a reason), and agree with the Prometheus rules, the adapter and each other."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
TOOLS = REPO / ".venv-deploy" / "bin"  # make setup-deploy-tools
KUBERNETES_VERSION = "1.32.0"  # kubectl of the machine image; the oldest version the manifests target
OVERLAYS = ("cpu", "gpu")
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}  # kube-prometheus-stack's; no schema in kubernetes-validate


def _tool(name: str) -> str:
    path = TOOLS / name
    if not path.exists():
        pytest.fail(f"{path} missing: run `make setup-deploy-tools`")
    return str(path)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, Path]:
    if not shutil.which("kubectl"):
        pytest.fail("kubectl (with kustomize) is not installed; it renders the overlays")
    out = tmp_path_factory.mktemp("k8s")
    paths = {}
    for overlay in OVERLAYS:
        result = subprocess.run(["kubectl", "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay)],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        paths[overlay] = out / f"{overlay}.yaml"
        paths[overlay].write_text(result.stdout)
    return paths


def resources(path: Path) -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(path.read_text()) if doc}


def _validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([_tool("kubernetes-validate"), "-k", KUBERNETES_VERSION, "--strict", str(path)],
                          capture_output=True, text=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_validates_against_the_kubernetes_schemas(rendered, overlay):
    result = _validate(rendered[overlay])
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    kinds = set(resources(rendered[overlay]))
    unchecked = {line.split("kind ")[1].split()[0] for line in output.splitlines() if "Couldn't find schema" in line}
    assert unchecked == CRD_KINDS and kinds - CRD_KINDS >= {
        "Namespace", "ServiceAccount", "PersistentVolumeClaim", "Deployment", "Service", "PodDisruptionBudget",
        "HorizontalPodAutoscaler", "NetworkPolicy"}


def test_the_schema_check_rejects_a_misspelt_field(rendered, tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text(rendered["cpu"].read_text().replace("readinessProbe:", "readynessProbe:", 1))
    assert _validate(broken).returncode != 0


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_checkov_finds_nothing_that_is_not_waived_with_a_reason(rendered, overlay):
    result = subprocess.run([_tool("checkov"), "-f", str(rendered[overlay]), "--framework", "kubernetes",
                             "--compact", "-o", "json"], capture_output=True, text=True)
    report = json.loads(result.stdout)
    report = report[0] if isinstance(report, list) else report
    failed = [(c["check_id"], c["resource"], c["check_name"]) for c in report["results"]["failed_checks"]]
    assert not failed, failed
    skipped = report["results"]["skipped_checks"]
    assert all(len((c.get("check_result") or {}).get("suppress_comment", "").strip()) > 20 for c in skipped), skipped
    assert report["summary"]["passed"] > 50  # checkov really looked


def test_prometheus_rules_pass_promtool_and_its_unit_tests():
    if not shutil.which("promtool"):
        pytest.fail("promtool missing: run `make setup-services` (Debian's prometheus)")
    rules = DEPLOY / "prometheus"
    check = subprocess.run(["promtool", "check", "rules", str(rules / "rules.yml")], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run(["promtool", "test", "rules", "rules_test.yml"], cwd=rules, capture_output=True, text=True)
    assert unit.returncode == 0 and "SUCCESS" in unit.stdout + unit.stderr, unit.stdout + unit.stderr


def test_prometheusrule_carries_exactly_the_tested_rules(rendered):
    rule = resources(rendered["cpu"])["PrometheusRule"]
    assert rule["spec"]["groups"] == yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())["groups"]


def test_hpa_scales_the_deployment_on_the_adapters_metric(rendered):
    adapter = yaml.safe_load((DEPLOY / "k8s" / "prometheus-adapter-values.yaml").read_text())["rules"]["custom"][0]
    for overlay in OVERLAYS:
        docs = resources(rendered[overlay])
        hpa, deployment = docs["HorizontalPodAutoscaler"], docs["Deployment"]
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
        metric = hpa["spec"]["metrics"][0]["pods"]
        assert metric["metric"]["name"] == adapter["name"]["as"]
        assert float(metric["target"]["averageValue"]) > 0
        assert hpa["spec"]["minReplicas"] >= 2 and docs["PodDisruptionBudget"]["spec"]["minAvailable"] == 1
    recorded = [r["record"] for g in yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())["groups"]
                for r in g["rules"]]
    assert adapter["name"]["matches"].strip("^$") in recorded


def _pod(docs) -> dict:
    return docs["Deployment"]["spec"]["template"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_ports_and_probes_fit_together(rendered, overlay):
    docs = resources(rendered[overlay])
    pod_labels = _pod(docs)["metadata"]["labels"]
    for kind, selector in (("Service", docs["Service"]["spec"]["selector"]),
                           ("PodDisruptionBudget", docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]),
                           ("Deployment", docs["Deployment"]["spec"]["selector"]["matchLabels"])):
        assert selector.items() <= pod_labels.items(), kind
    monitor = docs["ServiceMonitor"]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= docs["Service"]["metadata"]["labels"].items()
    service_ports = {p["name"] for p in docs["Service"]["spec"]["ports"]}
    assert {e["port"] for e in monitor["endpoints"]} <= service_ports == {"http", "grpc", "metrics"}
    triton = next(c for c in _pod(docs)["spec"]["containers"] if c["name"] == "triton")
    assert {p["name"] for p in triton["ports"]} == service_ports
    assert triton["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["startupProbe"]["periodSeconds"] * triton["startupProbe"]["failureThreshold"] >= 300  # model load
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_run_non_root_with_the_admin_key_from_a_secret(rendered, overlay):
    docs = resources(rendered[overlay])
    spec = _pod(docs)["spec"]
    assert spec["securityContext"]["runAsNonRoot"] and spec["securityContext"]["runAsUser"] != 0
    assert docs["Namespace"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for container in spec["containers"] + spec.get("initContainers", []):
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False and context["capabilities"]["drop"] == ["ALL"]
        assert context["readOnlyRootFilesystem"] is True
    triton = spec["containers"][0]
    key_file = next(e["value"] for e in triton["env"] if e["name"] == "TRITON_ADMIN_KEY_FILE")
    mount = next(m for m in triton["volumeMounts"] if key_file.startswith(m["mountPath"] + "/"))
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "yolov6-triton-admin"
    assert "kind: Secret" not in rendered[overlay].read_text()  # the key is created by the user, never shipped


def test_gpu_pods_build_the_plan_on_their_gpu_into_what_triton_serves(rendered):
    spec = _pod(resources(rendered["gpu"]))["spec"]
    triton, build = spec["containers"][0], spec["initContainers"][0]
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == 1 and build["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "python -m yolov6_build.engine /models" in " ".join(build["command"])
    served = next(m for m in triton["volumeMounts"] if m["mountPath"] == "/models")["name"]
    written = next(m for m in build["volumeMounts"] if m["mountPath"] == "/models")["name"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert served == written and "emptyDir" in volumes[served]
    source = next(m for m in build["volumeMounts"] if m["mountPath"] == "/repository")["name"]
    assert volumes[source]["persistentVolumeClaim"]["claimName"] == "yolov6-model-repository"
    assert "--model-repository=/models" in triton["args"]


def test_cpu_pods_serve_the_claim_with_whole_cores_and_no_gpu(rendered):
    spec = _pod(resources(rendered["cpu"]))["spec"]
    triton = spec["containers"][0]
    assert "nvidia.com/gpu" not in json.dumps(spec) and "initContainers" not in spec
    assert triton["resources"]["limits"]["cpu"] == triton["resources"]["requests"]["cpu"]
    assert triton["args"][:2] == ["serve", "/models"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"]["readOnly"] is True
