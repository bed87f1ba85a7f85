"""The operator's API client against the API test server: paths, patches, and errors as KubeError."""

from __future__ import annotations

import pytest
from gpuscale.kube.client import Credentials, KubeClient, KubeError, object_path, path

from kube_test_server.server import KubeTestServer


def test_paths_for_core_and_group_kinds() -> None:
    assert path("v1", "pods", "ns") == "/api/v1/namespaces/ns/pods"
    assert (
        path("apps/v1", "deployments", "ns", "web", "scale")
        == "/apis/apps/v1/namespaces/ns/deployments/web/scale"
    )
    assert path("v1", "nodes") == "/api/v1/nodes"
    cm = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "ns"}}
    assert object_path(cm) == "/api/v1/namespaces/ns/services/s"
    assert object_path(cm, with_name=False) == "/api/v1/namespaces/ns/services"


async def test_create_get_list_patch_delete(kube_server: KubeTestServer) -> None:
    client = KubeClient(Credentials(kube_server.url, token="t"))
    try:
        url = path("v1", "serviceaccounts", "default")
        made = await client.create(url, {"metadata": {"name": "a", "labels": {"x": "1"}}})
        assert made["metadata"]["uid"]
        await client.create(url, {"metadata": {"name": "b"}})
        assert [o["metadata"]["name"] for o in await client.list(url, "x=1")] == ["a"]
        patched = await client.patch(f"{url}/a", {"metadata": {"labels": {"y": "2"}}})
        assert patched["metadata"]["labels"] == {"x": "1", "y": "2"}
        tested = [{"op": "test", "path": "/metadata/labels/y", "value": "3"}]
        with pytest.raises(KubeError) as failed:
            await client.patch(f"{url}/a", tested, kind="json")
        assert failed.value.status == 422
        await client.delete(f"{url}/a")
        with pytest.raises(KubeError) as missing:
            await client.get(f"{url}/a")
        assert missing.value.not_found
        assert 'serviceaccounts "a" not found' in missing.value.message
        with pytest.raises(KubeError) as exists:
            await client.create(url, {"metadata": {"name": "b"}})
        assert exists.value.conflict
    finally:
        await client.aclose()
