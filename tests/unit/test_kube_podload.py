"""Load from the pods' own gauges (no gateway): summed, idle ones found, custom gauge names honoured,
labelled gauges summed over their label sets."""

from __future__ import annotations

import httpx
import pytest
from gpuscale.control.gateway_admin import GatewayUnavailable
from gpuscale.kube.podload import PodLoad

PODS = {
    "a": "vllm:num_requests_waiting 2\nvllm:num_requests_running 1\n",
    "b": "vllm:num_requests_waiting 0\nvllm:num_requests_running 0\n",
    "c": "gpuscale_queue_depth 0\n",
    # As vLLM exposes them: labelled by model, one label set per model served.
    "d": 'vllm:num_requests_waiting{engine="0",model_name="m1"} 3\n'
    'vllm:num_requests_waiting{engine="1",model_name="m1"} 2\n'
    'vllm:num_requests_waiting{engine="0",model_name="m2"} 1\n'
    'vllm:num_requests_running{engine="0",model_name="m1"} 1\n'
    'vllm:num_requests_running{engine="1",model_name="m1"} 1\n'
    'vllm:num_requests_running{engine="0",model_name="m2"} 0\n'
    # A longer name that starts like the gauge's is another metric.
    "vllm:num_requests_waiting_total 50\n",
}


def transport(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, text=PODS[request.url.host.removeprefix("pod-")])


async def test_the_view_sums_the_pods_and_finds_the_idle_one() -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(transport)) as client:
        load = PodLoad(client, "vllm:num_requests_waiting", "vllm:num_requests_running", slots=1)
        load.pods = {"a": "http://pod-a", "b": "http://pod-b"}
        view = await load.view()
        assert (view.queued, view.inflight) == (2, 1)
        assert {r.name: r.outstanding for r in view.replicas} == {"a": 3, "b": 0}
        assert view.idle_ready == 1
        held = await load.cordon("b")
        assert held is not None
        assert held.idle
        assert await load.cordon("gone") is None


async def test_a_pod_without_the_named_gauges_is_no_data() -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(transport)) as client:
        load = PodLoad(client, "vllm:num_requests_waiting", "vllm:num_requests_running", slots=1)
        load.pods = {"c": "http://pod-c"}
        with pytest.raises(GatewayUnavailable, match="exposes no vllm:num_requests_waiting"):
            await load.view()


@pytest.mark.parametrize(
    ("queue", "running", "expected"),
    [
        # A bare name sums the gauge over its label sets; labels in the name pick the sets that hold them.
        ("vllm:num_requests_waiting", "vllm:num_requests_running", (6, 2)),
        ('vllm:num_requests_waiting{model_name="m1"}', 'vllm:num_requests_running{model_name="m1"}', (5, 2)),
        (
            'vllm:num_requests_waiting{engine="0",model_name="m2"}',
            'vllm:num_requests_running{model_name="m2"}',
            (1, 0),
        ),
    ],
)
async def test_labelled_gauges_are_read_by_their_bare_name_or_one_label_set(
    queue: str, running: str, expected: tuple[int, int]
) -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(transport)) as client:
        load = PodLoad(client, queue, running, slots=1)
        load.pods = {"d": "http://pod-d"}
        view = await load.view()
        assert (view.queued, view.inflight) == expected


async def test_a_label_set_the_pod_does_not_expose_is_no_data() -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(transport)) as client:
        load = PodLoad(client, 'vllm:num_requests_waiting{model_name="m3"}', "vllm:num_requests_running", 1)
        load.pods = {"d": "http://pod-d"}
        with pytest.raises(GatewayUnavailable, match="exposes no"):
            await load.view()
