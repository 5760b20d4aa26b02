"""deploy/k8s: both overlays, as `k8s-overlay` deploys them (images pinned by digest, monitoring added),
render, validate against the Kubernetes 1.32 schemas, pass checkov (waivers need a reason), and agree with
the Prometheus rules, the adapter and each other. The review's findings each have a test here."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
TOOLS = REPO / ".venv-deploy" / "bin"  # make setup-deploy-tools
KUBERNETES_VERSION = "1.32.0"  # kubectl of the machine image; the oldest version the manifests target
OVERLAYS = ("cpu", "gpu")
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}  # kube-prometheus-stack's; no schema in kubernetes-validate
RELEASE = "my-prometheus"  # a Helm release name other than the chart's own


def _pinned(name: str) -> str:
    return f"registry.example.com/{name}@sha256:{'0' * 64}"


def _tool(name: str) -> str:
    path = TOOLS / name
    if not path.exists():
        pytest.fail(f"{path} missing: run `make setup-deploy-tools`")
    return str(path)


def _render(folder: Path) -> str:
    if not shutil.which("kubectl"):
        pytest.fail("kubectl (with kustomize) is not installed; it renders the overlays")
    result = subprocess.run(["kubectl", "kustomize", str(folder)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, Path]:
    """Each flavour as a user deploys it: k8s-overlay with every image pinned and monitoring added."""
    from yolov6_build.scaleout.k8s import PLACEHOLDERS, OverlaySettings, write_overlay

    out = tmp_path_factory.mktemp("k8s")
    paths = {}
    for overlay in OVERLAYS:
        images = {name: _pinned(name) for name in PLACEHOLDERS[overlay]}
        folder = write_overlay(OverlaySettings(overlay, images, prometheus_release=RELEASE), out / overlay).parent
        paths[overlay] = out / f"{overlay}.yaml"
        paths[overlay].write_text(_render(folder))
    return paths


def resources_of(text: str) -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(text) if doc}


def resources(path: Path) -> dict[str, dict]:
    return resources_of(path.read_text())


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
        "Namespace", "ServiceAccount", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler",
        "NetworkPolicy"}


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
    assert build["image"] == _pinned("yolov6-int8/gpu-repository")
    # the repository image's /repository copied into the pod's volume, then the plan built there
    assert build["args"][:3] == ["/models", "--copy-from", "/repository"]
    served = next(m for m in triton["volumeMounts"] if m["mountPath"] == "/models")["name"]
    written = next(m for m in build["volumeMounts"] if m["mountPath"] == "/models")["name"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert served == written and "emptyDir" in volumes[served]
    assert "--model-repository=/models" in triton["args"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_container_replaces_its_images_entrypoint(rendered, overlay):
    """`command:` would skip the entrypoint: NGC's (CUDA forward compatibility) and the images' own."""
    spec = _pod(resources(rendered[overlay]))["spec"]
    for container in spec["containers"] + spec.get("initContainers", []):
        assert "command" not in container, container["name"]
    engine = (REPO / "docker" / "Dockerfile.engine").read_text()
    assert '"python3", "-m", "yolov6_build.engine"]' in engine  # what the init container's arguments go to


def test_gpu_rolling_updates_need_no_spare_gpu(rendered):
    update = resources(rendered["gpu"])["Deployment"]["spec"]["strategy"]["rollingUpdate"]
    assert update["maxSurge"] == 0 and update["maxUnavailable"] == 1
    cpu = resources(rendered["cpu"])["Deployment"]["spec"]["strategy"]["rollingUpdate"]
    assert cpu["maxSurge"] == 1 and cpu["maxUnavailable"] == 0  # a CPU pod can surge: ready before one goes


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policy_admits_the_cluster_only_and_lets_nothing_out(rendered, overlay):
    policy = resources(rendered[overlay])["NetworkPolicy"]["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"} and policy["egress"] == []
    by_port = {}
    for rule in policy["ingress"]:
        assert rule.get("from"), "a rule without `from` admits every source, outside the cluster too"
        for port in rule["ports"]:
            by_port[port["port"]] = rule["from"]
    assert set(by_port) == {"http", "grpc", "metrics"}
    assert by_port["http"] == by_port["grpc"] == [{"namespaceSelector": {}}]  # pods of any namespace
    assert by_port["metrics"] == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "monitoring"}}}]


def test_the_monitoring_namespace_and_release_label_are_settings(tmp_path):
    from yolov6_build.scaleout.k8s import OverlaySettings, write_overlay

    settings = OverlaySettings("cpu", {"yolov6-int8/cpu-repository": _pinned("x")}, prometheus_release="kps",
                               monitoring_namespace="observability")
    docs = resources_of(_render(write_overlay(settings, tmp_path / "o").parent))
    assert docs["ServiceMonitor"]["metadata"]["labels"]["release"] == "kps"
    assert docs["PrometheusRule"]["metadata"]["labels"]["release"] == "kps"
    selector = docs["NetworkPolicy"]["spec"]["ingress"][1]["from"][0]["namespaceSelector"]["matchLabels"]
    assert selector == {"kubernetes.io/metadata.name": "observability"}
    assert {d["metadata"].get("namespace") for k, d in docs.items() if k != "Namespace"} == {"yolov6"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_shipped_overlays_need_no_monitoring_crds(overlay):
    """`kubectl apply -k` of an overlay without the monitoring component creates no CRD-typed object."""
    kinds = set(resources_of(_render(DEPLOY / "k8s" / "overlays" / overlay)))
    assert not kinds & CRD_KINDS


def test_an_overlay_needs_every_image_pinned_somewhere_real():
    from yolov6_build.errors import ConfigError
    from yolov6_build.scaleout.k8s import OverlaySettings, image_entry

    with pytest.raises(ConfigError, match="yolov6-int8/gpu-repository"):
        OverlaySettings("gpu", {"yolov6-int8/triton": _pinned("t")})
    with pytest.raises(ConfigError, match="has no image"):
        OverlaySettings("cpu", {"yolov6-int8/cpu-repository": _pinned("c"), "yolov6-int8/triton": _pinned("t")})
    with pytest.raises(ConfigError, match="registry"):
        image_entry("yolov6-int8/cpu-repository", "cpu-repository:1.0")  # a bare name resolves to Docker Hub
    assert image_entry("p", "reg.example.com/a/b:1.0") == {"name": "p", "newName": "reg.example.com/a/b",
                                                          "newTag": "1.0"}


def test_the_servers_ready_timeout_covers_the_startup_probe(rendered):
    from yolov6_build.server import READY_TIMEOUT_S

    probe = _pod(resources(rendered["cpu"]))["spec"]["containers"][0]["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] <= READY_TIMEOUT_S


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_that_can_fail_on_a_busy_node_have_a_timeout(rendered, overlay):
    triton = _pod(resources(rendered[overlay]))["spec"]["containers"][0]
    for probe in ("readinessProbe", "livenessProbe"):
        assert triton[probe].get("timeoutSeconds", 1) >= 3, probe


def test_every_file_the_deployment_files_cite_exists():
    cited = set()
    for path in [*DEPLOY.rglob("*.y*ml"), *(p for p in (REPO / "docker").iterdir() if p.is_file())]:
        cited |= set(re.findall(r"\b((?:deploy|docker|tests|build)/[\w./-]+\.(?:ya?ml|json|py|sh|txt))",
                                path.read_text()))
    missing = sorted(c for c in cited if not (REPO / c).exists())
    assert cited and not missing, missing


def test_the_gpu_hpa_comment_counts_the_gpu_repositorys_batchers():
    words = {"two": 2, "three": 3, "four": 4, "five": 5}
    comment = (DEPLOY / "k8s" / "overlays" / "gpu" / "hpa.yaml").read_text()
    said = words[re.search(r"(\w+) dynamic batchers", comment).group(1)]
    configs = (REPO / "model_repository" / "gpu").glob("*/config.pbtxt")
    assert said == sum("dynamic_batching" in p.read_text() for p in configs)


def test_cpu_pods_serve_the_repository_of_their_image_as_guaranteed_pods_without_gpu(rendered):
    spec = _pod(resources(rendered["cpu"]))["spec"]
    triton = spec["containers"][0]
    assert "nvidia.com/gpu" not in json.dumps(spec) and "initContainers" not in spec
    assert triton["resources"]["limits"] == triton["resources"]["requests"]  # the Guaranteed QoS class
    assert triton["args"][:2] == ["serve", "/repository"]  # docker/Dockerfile.repository's folder
    assert "COPY . /repository" in (REPO / "docker" / "Dockerfile.repository").read_text()
    assert triton["image"] == _pinned("yolov6-int8/cpu-repository")
    assert "PersistentVolumeClaim" not in resources(rendered["cpu"])
