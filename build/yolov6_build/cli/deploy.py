"""Deployment commands: k8s-overlay (your images in a kustomize overlay of deploy/k8s)."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError


def image_setting(text: str) -> tuple[str, str]:
    placeholder, sep, reference = text.partition("=")
    if not sep or not placeholder or not reference:
        raise ConfigError(f"--image wants PLACEHOLDER=REFERENCE (e.g. yolov6-int8/cpu-repository="
                          f"registry.example.com/yolov6/cpu-repository@sha256:...), got {text!r}")
    return placeholder, reference


def add_k8s_overlay(sub) -> None:
    from ..scaleout.k8s import PLACEHOLDERS, OverlaySettings

    images = "; ".join(f"{flavour}: {', '.join(names)}" for flavour, names in PLACEHOLDERS.items())
    p = sub.add_parser("k8s-overlay", help="write a kustomize overlay of deploy/k8s that names your pushed images "
                       "(by digest) and, if asked, adds monitoring with your Prometheus's release label")
    p.add_argument("--flavour", choices=sorted(PLACEHOLDERS), required=True)
    p.add_argument("--image", dest="images", action="append", default=[], metavar="PLACEHOLDER=REFERENCE",
                   help=f"one per image of the flavour ({images})")
    p.add_argument("--prometheus-release", default=None, metavar="NAME",
                   help="add the ServiceMonitor and PrometheusRule (needs kube-prometheus-stack's CRDs) labelled "
                        "release=NAME, the Helm release your Prometheus selects; without it, no monitoring objects")
    p.add_argument("--monitoring-namespace", default=OverlaySettings.monitoring_namespace, metavar="NS",
                   help="the namespace whose pods may scrape the metrics port (default %(default)s)")
    p.add_argument("-o", "--output", type=Path, default=None, help="folder to write (default artifacts/k8s/FLAVOUR)")
    p.set_defaults(func=run_k8s_overlay)


def run_k8s_overlay(args) -> int:
    from ..scaleout.k8s import OverlaySettings, write_overlay

    settings = OverlaySettings(args.flavour, dict(image_setting(text) for text in args.images),
                               args.prometheus_release, args.monitoring_namespace)
    out = args.output or Path("artifacts/k8s") / args.flavour
    path = write_overlay(settings, out)
    print(f"wrote {path}\nnext: kubectl apply -k {out}")
    return 0


COMMANDS = (add_k8s_overlay,)
