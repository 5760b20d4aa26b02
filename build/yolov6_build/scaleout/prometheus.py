"""A real Prometheus on loopback that scrapes local Triton servers with the deployment's recording rules.

Each target gets the ``namespace`` and ``pod`` labels Kubernetes' service discovery would give it, so
the rules, the prometheus-adapter query and the dashboard run here unchanged.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from pathlib import Path

from ..errors import BuildError
from ..server import free_ports
from . import DEPLOY, ServiceProcess, service_binary

RULES = DEPLOY / "prometheus" / "rules.yml"
DASHBOARD = DEPLOY / "grafana" / "yolov6-triton.json"
NAMESPACE = "local"


def scrape_config(targets: dict[str, str], interval_s: float, rules: Path) -> dict:
    """Prometheus configuration: ``targets`` maps a pod name to its metrics address (host:port)."""
    return {"global": {"scrape_interval": f"{interval_s:g}s", "evaluation_interval": f"{interval_s:g}s"},
            "rule_files": [str(rules)],
            "scrape_configs": [{"job_name": "triton", "static_configs": [
                {"targets": [address], "labels": {"namespace": NAMESPACE, "pod": pod}}
                for pod, address in targets.items()]}]}


class LocalPrometheus:
    """``with LocalPrometheus(work_dir, {"replica-0": "127.0.0.1:8002"}) as prom: prom.query(...)``."""

    def __init__(self, work_dir: Path, targets: dict[str, str], interval_s: float = 1.0, rules: Path = RULES):
        self.work_dir = Path(work_dir)
        self.targets, self.interval_s, self.rules = targets, interval_s, rules
        self.port = free_ports(1)[0]
        self.service: ServiceProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> "LocalPrometheus":
        import yaml

        binary = service_binary("prometheus")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        config = self.work_dir / "prometheus.yml"
        config.write_text(yaml.safe_dump(scrape_config(self.targets, self.interval_s, self.rules), sort_keys=False))
        command = [binary, f"--config.file={config}", f"--storage.tsdb.path={self.work_dir / 'data'}",
                   f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=2h"]
        self.service = ServiceProcess(command, self.work_dir / "prometheus.log")
        self._wait_until_scraping(timeout_s)
        return self

    def _wait_until_scraping(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.service.exited() is not None:
                raise BuildError(f"prometheus exited with code {self.service.exited()}; see {self.service.log_path}")
            try:
                if len(self.query("up == 1")) == len(self.targets):
                    return
            except OSError:
                pass
            time.sleep(0.5)
        self.stop()
        raise BuildError(f"prometheus did not scrape all of {sorted(self.targets)} within {timeout_s:.0f}s")

    def query(self, expr: str) -> list[dict]:
        """Instant query: [{'metric': {labels}, 'value': float}, ...] (empty when the expression has no data)."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        if body.get("status") != "success":
            raise BuildError(f"prometheus refused {expr!r}: {body.get('error')}")
        return [{"metric": r["metric"], "value": float(r["value"][1])} for r in body["data"]["result"]]

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()
        self.service = None

    def __enter__(self) -> "LocalPrometheus":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def dashboard_queries(path: Path = DASHBOARD) -> dict[str, str]:
    """Every PromQL expression of the Grafana dashboard: {'panel title / refId': expr}."""
    dashboard = json.loads(Path(path).read_text())
    return {f"{panel['title']} / {target['refId']}": target["expr"]
            for panel in dashboard["panels"] for target in panel.get("targets", [])}


def adapter_query(values: Path, pods: list[str], group_by: str = "pod") -> str:
    """The prometheus-adapter rule's metricsQuery as the adapter expands it for a pods metric."""
    import yaml

    rule = yaml.safe_load(Path(values).read_text())["rules"]["custom"][0]
    series = rule["name"]["matches"].strip("^$")
    matchers = f'namespace="{NAMESPACE}",pod=~"{"|".join(pods)}"'
    return (rule["metricsQuery"].replace("<<.Series>>", series).replace("<<.LabelMatchers>>", matchers)
            .replace("<<.GroupBy>>", group_by))
