"""Two embedded replicas behind a real HAProxy (Debian's): both protocols balanced over both replicas, and a
replica stopped mid-run (graceful: drained in the balancer first; or SIGKILL) loses no request while Locust
users retry. Asserted from HAProxy's own counters and states, which hold however busy the cores are; how
many retries clients saw is reported, not asserted (a balancer that re-dispatches can hide a kill)."""

import pytest

from yolov6_build.scaleout.fleet import Fleet, disruption_run
from yolov6_build.scaleout.haproxy import HAProxy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fleet(repository, tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet")
    with Fleet(repository, root / "servers", 2) as replicas, HAProxy(root / "haproxy", replicas.backends()) as balancer:
        yield replicas, balancer


def test_balancer_answers_both_protocols_as_a_replica_does_from_both_replicas(fleet, images):
    import numpy as np

    from yolov6_client import TritonDetector

    replicas, balancer = fleet
    assert set(balancer.states().values()) == {"UP"} and len(balancer.states()) == 4  # 2 replicas x 2 protocols
    before = {name: balancer.answered(name) for name in ("replica-0", "replica-1")}
    direct = replicas.servers[0]
    for path in images + images:
        with TritonDetector(direct.grpc_url) as replica:
            expected = replica.detect(path)
        for url, protocol in ((balancer.grpc_url, "grpc"), (balancer.http_url, "http")):
            with TritonDetector(url, protocol=protocol) as through:
                got = through.detect(path)
            np.testing.assert_allclose(got.boxes_xyxy, expected.boxes_xyxy, atol=1e-3)
            np.testing.assert_array_equal(got.class_ids, expected.class_ids)
    served = {name: balancer.answered(name) - count for name, count in before.items()}
    assert all(count > 0 for count in served.values()), served  # leastconn, ties in turn: both replicas


@pytest.mark.parametrize("mode, protocol", [("graceful", "grpc"), ("sigkill", "http")])
def test_a_replica_stopped_mid_run_loses_no_request(fleet, mode, protocol, tmp_path):
    replicas, balancer = fleet
    result = disruption_run(replicas, balancer, mode, protocol, users=4, seconds=20, retries=5, out_dir=tmp_path)
    step = result.step
    assert result.answered_before_stop > 0, "the stopped replica carried no traffic: nothing was disrupted"
    assert step.requests > 100 and step.failures == 0, step
    # disruption_run waited for the balancer to mark the replica DOWN, then UP again after the restart
    assert result.out_after_s > 0 and result.back_after_s > 0
    assert set(balancer.states().values()) == {"UP"}, "the restarted replica is not back in"
