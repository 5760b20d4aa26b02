"""Security defaults of the embedded server: loopback only, admin APIs locked behind a key."""

import ipaddress
import json
import urllib.error
import urllib.request

import psutil
import pytest

from yolov6_build.server import ADMIN_HEADER, ServerOptions, TritonServer

pytestmark = pytest.mark.triton


def _is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    return address.is_loopback or (address.version == 6 and (address.ipv4_mapped or address).is_loopback)


def test_listens_on_loopback_only(server):
    sockets = [c for c in psutil.Process(server.process.pid).net_connections(kind="inet")
               if c.status == psutil.CONN_LISTEN]
    assert {c.laddr.port for c in sockets} >= {server.options.http_port, server.options.grpc_port}
    assert all(_is_loopback(c.laddr.ip) for c in sockets), sockets


def _post(url, headers=None):
    request = urllib.request.Request(url, data=b"{}", method="POST", headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read()


@pytest.mark.parametrize("path", ["v2/repository/index", "v2/repository/models/yolov6/unload",
                                  "v2/systemsharedmemory/region/x/register", "v2/logging", "v2/trace/setting"])
def test_admin_apis_refuse_requests_without_the_key(server, path):
    with pytest.raises(urllib.error.HTTPError) as error:
        _post(f"http://{server.http_url}/{path}")
    assert error.value.code == 403


def test_admin_key_unlocks_the_repository_api_and_is_private(server):
    status, body = _post(f"http://{server.http_url}/v2/repository/index", {ADMIN_HEADER: server.admin_key})
    assert status == 200 and {m["name"] for m in json.loads(body)} >= {"yolov6", "yolov6_nms"}
    assert (server.work_dir / "admin_key").stat().st_mode & 0o077 == 0


def _get(url, headers=None):
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as response:
        return response.status


def test_a_detection_client_needs_no_key_and_statistics_need_one(server):
    """Open: health, metadata, model config (class names, input size), inference. Locked: the rest."""
    for path in ("v2/health/ready", "v2", "v2/models/yolov6", "v2/models/yolov6/config"):
        assert _get(f"http://{server.http_url}/{path}") == 200, path
    with pytest.raises(urllib.error.HTTPError) as error:
        _get(f"http://{server.http_url}/v2/models/stats")
    assert error.value.code == 403
    assert _get(f"http://{server.http_url}/v2/models/stats", {ADMIN_HEADER: server.admin_key}) == 200


def test_grpc_admin_protocols_are_locked_too(server):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        with pytest.raises(InferenceServerException, match="restricted"):
            client.unload_model("yolov6")
        assert client.is_model_ready("yolov6")  # inference-side APIs stay open
        assert client.get_model_config("yolov6").config.name == "yolov6"
    finally:
        client.close()


def test_repository_api_cannot_be_left_open_with_model_management(tmp_path):
    from yolov6_build.errors import ConfigError

    options = ServerOptions(restricted_apis=("shared-memory",))
    with pytest.raises(ConfigError, match="admin key"):
        TritonServer(tmp_path, tmp_path / "work", options).command()


def test_generated_admin_key_file_is_private_and_removed_on_stop(repository, tmp_path, launch_server):
    triton = launch_server(repository, tmp_path / "server")
    key_file = triton.admin_key_path
    try:
        assert key_file.read_text() == triton.admin_key and key_file.stat().st_mode & 0o077 == 0
        assert not list(key_file.parent.glob(".admin_key.*"))  # no temporary left behind
    finally:
        triton.stop()
    assert not key_file.exists()
