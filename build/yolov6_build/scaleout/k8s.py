"""Your deployment: a kustomize overlay over ``deploy/k8s`` that names your pushed images by digest.

The shipped overlays name placeholder images (``yolov6-int8/...``) that no registry serves: applied as
they are, every pod ends in ImagePullBackOff. ``yolov6_build k8s-overlay`` writes a kustomization of
your own that points at one shipped overlay, sets each placeholder to the image you pushed and, when
asked, adds the monitoring component with your Prometheus's release label (kube-prometheus-stack
selects ServiceMonitors and PrometheusRules by it). ``kubectl apply -k <that folder>`` deploys it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import BuildError, ConfigError
from . import DEPLOY

log = logging.getLogger(__name__)
K8S = DEPLOY / "k8s"
NAMESPACE = "yolov6"  # deploy/k8s/base/namespace.yaml
# The placeholder images of each shipped overlay, and the Dockerfiles that make them.
PLACEHOLDERS = {
    "cpu": {"yolov6-int8/cpu-repository": "docker/Dockerfile.repository on docker/Dockerfile.cpu"},
    "gpu": {"yolov6-int8/triton": "docker/Dockerfile.triton",
            "yolov6-int8/gpu-repository": "docker/Dockerfile.repository on docker/Dockerfile.engine"},
}
DIGEST = re.compile(r"^(?P<name>[^@\s]+)@(?P<digest>sha256:[0-9a-f]{64})$")
TAGGED = re.compile(r"^(?P<name>[^@\s]+?)(?::(?P<tag>[\w][\w.-]{0,127}))?$")


@dataclass(frozen=True)
class OverlaySettings:
    flavour: str
    images: dict[str, str]  # placeholder -> the reference you pushed (name@sha256:..., or name:tag)
    prometheus_release: str | None = None  # the `release` label your Prometheus selects; None: no monitoring
    monitoring_namespace: str = "monitoring"  # where Prometheus runs (the only source allowed on metrics)

    def __post_init__(self):
        if self.flavour not in PLACEHOLDERS:
            raise ConfigError(f"flavour must be one of {', '.join(PLACEHOLDERS)}, got {self.flavour!r}")
        wanted, given = set(PLACEHOLDERS[self.flavour]), set(self.images)
        if given - wanted:
            raise ConfigError(f"the {self.flavour} overlay has no image {', '.join(sorted(given - wanted))}; "
                              f"its images: {', '.join(sorted(wanted))}")
        if wanted - given:
            missing = [f"{name} ({PLACEHOLDERS[self.flavour][name]})" for name in sorted(wanted - given)]
            raise ConfigError(f"set every image of the {self.flavour} overlay; missing: {'; '.join(missing)}")


def image_entry(placeholder: str, reference: str) -> dict:
    """A kustomize ``images`` entry: by digest when the reference has one (what a rollout should pin)."""
    pinned = DIGEST.match(reference)
    if pinned:
        return {"name": placeholder, "newName": pinned["name"], "digest": pinned["digest"]}
    tagged = TAGGED.match(reference)
    if not tagged or "/" not in tagged["name"]:
        raise ConfigError(f"{reference!r} is not an image reference with a registry (registry/name@sha256:... "
                          "or registry/name:tag)")
    log.warning("%s is set by tag: a pushed tag can move; pin it by digest (docker inspect --format "
                "'{{index .RepoDigests 0}}' IMAGE after the push)", reference)
    return {"name": placeholder, "newName": tagged["name"], **({"newTag": tagged["tag"]} if tagged["tag"] else {})}


def _label_patch(kind: str, release: str) -> dict:
    return {"target": {"group": "monitoring.coreos.com", "kind": kind},
            "patch": json.dumps([{"op": "replace", "path": "/metadata/labels/release", "value": release}])}


def overlay_kustomization(settings: OverlaySettings, out_dir: Path, k8s: Path = K8S) -> dict:
    """The kustomization (as a dict) for ``out_dir``, pointing at the shipped overlay by a relative path."""
    def relative(path: Path) -> str:
        return os.path.relpath(path.resolve(), out_dir.resolve())

    kustomization = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                     "namespace": NAMESPACE, "resources": [relative(k8s / "overlays" / settings.flavour)],
                     "images": [image_entry(p, r) for p, r in sorted(settings.images.items())]}
    selector = "/spec/ingress/1/from/0/namespaceSelector/matchLabels/kubernetes.io~1metadata.name"
    patches = [{"target": {"kind": "NetworkPolicy", "name": "yolov6-triton"},
                "patch": json.dumps([{"op": "replace", "path": selector, "value": settings.monitoring_namespace}])}]
    if settings.prometheus_release:
        kustomization["components"] = [relative(k8s / "components" / "monitoring")]
        patches += [_label_patch(kind, settings.prometheus_release) for kind in ("ServiceMonitor", "PrometheusRule")]
    kustomization["patches"] = patches
    return kustomization


def write_overlay(settings: OverlaySettings, out_dir: Path, k8s: Path = K8S) -> Path:
    """Write ``out_dir/kustomization.yaml``; when kubectl is installed, render it once to prove it builds."""
    import yaml

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "kustomization.yaml"
    header = (f"# Written by `python -m yolov6_build k8s-overlay --flavour {settings.flavour}`: the shipped "
              f"{settings.flavour} overlay\n# with your images. Deploy: kubectl apply -k {out_dir}\n")
    path.write_text(header + yaml.safe_dump(overlay_kustomization(settings, out_dir, k8s), sort_keys=False))
    if shutil.which("kubectl"):
        rendered = subprocess.run(["kubectl", "kustomize", str(out_dir)], capture_output=True, text=True)
        if rendered.returncode != 0:
            raise BuildError(f"kubectl kustomize {out_dir} failed: {rendered.stderr.strip()}")
    return path
