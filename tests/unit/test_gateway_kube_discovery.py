"""The gateway's Kubernetes discovery against the API test server: ready pods become replicas, pods that
stop being ready or start terminating leave at once, and the watch survives drops, server errors and
compaction. Also the kubeconfig and in-cluster readers, and the CLI's errors."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import re
import shutil
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gpuscale_gateway import cli, kube_discovery
from gpuscale_gateway.kube_discovery import (
    BearerToken,
    KubeConfig,
    KubeConfigError,
    KubeDiscovery,
    in_cluster_config,
    kubeconfig,
    load_config,
    pod_url,
)
from gpuscale_gateway.registry import Registry, State
from gpuscale_gateway.server import running
from gpuscale_gateway.settings import GatewaySettings
from inference_app.exit_codes import EXIT_USAGE
from kube_test_server.server import KubeTestServer
from tests.conftest import wait_for

NS = "default"
PORT = 8000
SELECTOR = "app=sleep"


class Api:
    """Pods written over HTTP, as the kubelet and the controllers would write them."""

    def __init__(self, server: KubeTestServer) -> None:
        self.http = httpx.Client(base_url=f"{server.url}/api/v1/namespaces/{NS}/pods", timeout=10)

    def create(
        self, name: str, ip: str | None = "10.0.0.1", ready: bool = True, app: str = "sleep", **extra: Any
    ) -> None:
        manifest = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": app}, **extra},
            "spec": {"containers": [{"name": "app", "image": "registry.local/app:1"}]},
        }
        self.http.post("", json=manifest).raise_for_status()
        if ip is not None:
            self.set_status(name, ip=ip, ready=ready)

    def set_status(self, name: str, ip: str = "10.0.0.1", ready: bool = True, phase: str = "Running") -> None:
        status = {
            "phase": phase,
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        }
        self.patch(f"/{name}/status", {"status": status})

    def patch(self, path: str, body: dict[str, Any]) -> None:
        response = self.http.patch(path, json=body, headers={"Content-Type": "application/merge-patch+json"})
        response.raise_for_status()

    def delete(self, name: str) -> None:
        self.http.delete(f"/{name}").raise_for_status()


@pytest.fixture
def api(kube_server: KubeTestServer) -> Iterator[Api]:
    api = Api(kube_server)
    yield api
    api.http.close()


@contextlib.asynccontextmanager
async def discovering(
    server: KubeTestServer, registry: Registry | None = None, **options: Any
) -> AsyncIterator[Registry]:
    registry = registry if registry is not None else Registry()
    discovery = KubeDiscovery(KubeConfig(server.url), NS, SELECTOR, PORT, **options)
    task = asyncio.create_task(discovery.run(registry))
    try:
        yield registry
        assert not task.done(), "the discovery stopped"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def urls(registry: Registry) -> dict[str, str]:
    return {replica.name: replica.url for replica in registry}


async def watching(server: KubeTestServer) -> None:
    """Until the discovery's watch stream is open (its list may have filled the registry before)."""
    await wait_for(lambda: server.call(lambda _: len(server.state.watch_drops)) > 0)


def lists(server: KubeTestServer) -> int:
    return sum(1 for r in server.evidence if r.verb == "list" and r.resource == "pods")


# --- pods to replicas -----------------------------------------------------------------------------------


async def test_a_ready_pod_is_a_replica_at_its_ip_and_port(kube_server: KubeTestServer, api: Api) -> None:
    api.create("before", ip="10.0.0.1")  # listed
    async with discovering(kube_server, Registry(default_slots=2)) as registry:
        await wait_for(lambda: "before" in registry)
        api.create("after", ip="10.0.0.2")  # watched
        await wait_for(lambda: "after" in registry)
        assert urls(registry) == {"before": "http://10.0.0.1:8000", "after": "http://10.0.0.2:8000"}
        assert all(r.state is State.READY and r.slots == 2 for r in registry)


async def test_pods_that_are_not_ready_pending_or_without_ip_are_not_replicas(
    kube_server: KubeTestServer, api: Api
) -> None:
    api.create("no-ip", ip=None)
    api.create("unready", ready=False)
    api.create("ready", ip="10.0.0.3")
    async with discovering(kube_server) as registry:
        await wait_for(lambda: "ready" in registry)
        api.set_status("no-ip", ip="10.0.0.4", ready=True, phase="Pending")
        api.create("marker", ip="10.0.0.5")
        await wait_for(lambda: "marker" in registry)
        assert set(urls(registry)) == {"ready", "marker"}


async def test_a_pod_that_stops_being_ready_is_removed_and_comes_back(
    kube_server: KubeTestServer, api: Api
) -> None:
    api.create("web-1")
    async with discovering(kube_server) as registry:
        await wait_for(lambda: "web-1" in registry)
        api.set_status("web-1", ready=False)
        await wait_for(lambda: "web-1" not in registry, within=1.0)
        api.set_status("web-1", ready=True)
        await wait_for(lambda: "web-1" in registry, within=1.0)


async def test_a_deleted_or_terminating_pod_is_removed_at_once(kube_server: KubeTestServer, api: Api) -> None:
    api.create("gone", ip="10.0.0.1")
    # A finalizer holds the pod: it stays, ready in its status, with a deletionTimestamp.
    api.create("terminating", ip="10.0.0.2", finalizers=["example.com/hold"])
    async with discovering(kube_server) as registry:
        await wait_for(lambda: len(registry) == 2)
        api.delete("gone")
        api.delete("terminating")
        await wait_for(lambda: len(registry) == 0, within=1.0)
        still_there = api.http.get("/terminating").json()
        assert still_there["metadata"]["deletionTimestamp"]
        api.patch("/terminating", {"metadata": {"finalizers": None}})


async def test_a_new_pod_ip_moves_the_replica(kube_server: KubeTestServer, api: Api) -> None:
    api.create("mover", ip="10.0.0.1")
    async with discovering(kube_server) as registry:
        await wait_for(lambda: "mover" in registry)
        replica = registry.get("mover")
        api.set_status("mover", ip="10.0.0.9")
        await wait_for(lambda: urls(registry).get("mover") == "http://10.0.0.9:8000", within=1.0)
        assert registry.get("mover") is replica  # updated in place: its counters stay


async def test_pods_outside_the_selector_are_ignored(kube_server: KubeTestServer, api: Api) -> None:
    api.create("other-1", app="other")
    async with discovering(kube_server) as registry:
        api.create("other-2", app="other", ip="10.0.0.2")
        api.create("mine", ip="10.0.0.3")
        await wait_for(lambda: "mine" in registry)
        assert set(urls(registry)) == {"mine"}
        # Relabelled out of the selection: the watch says DELETED.
        api.patch("/mine", {"metadata": {"labels": {"app": "other"}}})
        await wait_for(lambda: "mine" not in registry, within=1.0)


async def test_replicas_it_did_not_add_are_left_alone(kube_server: KubeTestServer, api: Api) -> None:
    registry = Registry()
    registry.add("static", "http://10.9.9.9:80")
    api.create("pod", ip="10.0.0.1")
    async with discovering(kube_server, registry):
        await wait_for(lambda: "pod" in registry)
        await watching(kube_server)
        kube_server.drop_watches()  # a relist reconciles only what the discovery owns
        api.delete("pod")
        await wait_for(lambda: "pod" not in registry)
        assert set(urls(registry)) == {"static"}


async def test_a_cordon_survives_unrelated_pod_changes(kube_server: KubeTestServer, api: Api) -> None:
    api.create("busy", ip="10.0.0.1")
    async with discovering(kube_server) as registry:
        await wait_for(lambda: "busy" in registry)
        registry.cordon("busy")  # the controller picked it for scale-down
        api.patch(
            "/busy", {"metadata": {"annotations": {"controller.kubernetes.io/pod-deletion-cost": "-5"}}}
        )
        api.create("marker", ip="10.0.0.2")
        await wait_for(lambda: "marker" in registry)
        replica = registry.get("busy")
        assert replica is not None
        assert replica.state is State.CORDONED


async def test_a_pod_ready_again_waits_until_its_earlier_requests_are_answered(
    kube_server: KubeTestServer, api: Api
) -> None:
    api.create("flappy", ip="10.0.0.1")
    async with discovering(kube_server) as registry:
        await wait_for(lambda: "flappy" in registry)
        old = registry.get("flappy")
        assert old is not None
        old.outstanding = 1  # one request sent to it and not answered yet
        api.set_status("flappy", ready=False)
        await wait_for(lambda: "flappy" not in registry)
        api.set_status("flappy", ready=True)
        api.create("marker", ip="10.0.0.2")
        await wait_for(lambda: "marker" in registry)
        await asyncio.sleep(0.2)
        # Back as a fresh replica now, it would count 0 outstanding and get a second request.
        assert "flappy" not in registry
        old.outstanding = 0
        await wait_for(lambda: "flappy" in registry, within=1.0)
        assert registry.get("flappy") is not old


# --- the watch breaks -----------------------------------------------------------------------------------


async def test_a_dropped_watch_relists_and_sees_what_changed(kube_server: KubeTestServer, api: Api) -> None:
    api.create("stays", ip="10.0.0.1")
    api.create("leaves", ip="10.0.0.2")
    async with discovering(kube_server) as registry:
        await wait_for(lambda: len(registry) == 2)
        await watching(kube_server)
        # Nothing runs on this loop between these calls: the changes happen while no stream is open.
        assert kube_server.drop_watches() == 1
        api.delete("leaves")
        api.create("arrives", ip="10.0.0.3")
        await wait_for(lambda: set(urls(registry)) == {"stays", "arrives"})
        assert lists(kube_server) == 2


async def test_server_errors_are_retried_until_the_api_answers(
    kube_server: KubeTestServer, api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    api.create("stays", ip="10.0.0.1")
    api.create("leaves", ip="10.0.0.2")
    async with discovering(kube_server) as registry:
        await wait_for(lambda: len(registry) == 2)
        await watching(kube_server)
        kube_server.inject_fault(500, method="GET", path="/pods", times=2)
        kube_server.drop_watches()
        api.delete("leaves")
        with caplog.at_level(logging.INFO, logger="gpuscale_gateway"):
            await wait_for(lambda: set(urls(registry)) == {"stays"}, within=5.0)
        assert "stays" in registry  # kept while the API failed
        assert lists(kube_server) >= 2
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 2  # the drop, then the first 500; the second 500 is a repeat
        assert "RemoteProtocolError" in warnings[0]
        assert "the API answered 500" in warnings[1]
        assert any("listed again" in r.getMessage() for r in caplog.records)


async def test_an_expired_version_relists(
    kube_server: KubeTestServer, api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    api.create("stays", ip="10.0.0.1")
    api.create("leaves", ip="10.0.0.2")
    async with discovering(kube_server, watch_seconds=1) as registry:
        await wait_for(lambda: len(registry) == 2)
        await watching(kube_server)
        lists_before = lists(kube_server)
        # The loop is held past the watch's end: the change and the compaction happen with no stream
        # open, so the next watch asks for a version the server no longer has.
        time.sleep(1.3)  # noqa: ASYNC251
        api.delete("leaves")
        kube_server.compact()
        with caplog.at_level(logging.DEBUG, logger="gpuscale_gateway"):
            await wait_for(lambda: set(urls(registry)) == {"stays"}, within=3.0)
        assert any("expired" in r.getMessage() for r in caplog.records)
        assert lists(kube_server) == lists_before + 1
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_watch_that_times_out_resumes_without_listing(kube_server: KubeTestServer, api: Api) -> None:
    async with discovering(kube_server, watch_seconds=1) as registry:
        await wait_for(lambda: lists(kube_server) == 1)
        await asyncio.sleep(1.3)
        api.create("late", ip="10.0.0.1")
        await wait_for(lambda: "late" in registry)
        assert lists(kube_server) == 1
        assert sum(1 for r in kube_server.evidence if r.verb == "watch") >= 2


# --- through the gateway's settings ---------------------------------------------------------------------


async def test_the_gateway_discovers_pods_from_its_settings(
    kube_server: KubeTestServer, api: Api, tmp_path: Path
) -> None:
    config = kube_server.write_kubeconfig(tmp_path / "kubeconfig.yaml")
    api.create("web-1", ip="10.0.0.1")
    settings = GatewaySettings(
        port=0,
        admin_port=0,
        discovery="kubernetes",
        kube_namespace=NS,
        kube_selector=SELECTOR,
        kube_port=9000,
        kubeconfig=str(config),
        slots=3,
    )
    async with running(settings) as gw, httpx.AsyncClient(base_url=gw.admin_url) as admin:
        await wait_for(lambda: "web-1" in gw.gateway.registry)
        listing = (await admin.get("/replicas")).json()["replicas"]
        assert [(r["name"], r["url"], r["slots"]) for r in listing] == [("web-1", "http://10.0.0.1:9000", 3)]


def test_pod_url_needs_ip_running_ready_and_no_deletion() -> None:
    ready: dict[str, Any] = {
        "metadata": {"name": "p"},
        "status": {
            "phase": "Running",
            "podIP": "fd00::5",
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    assert pod_url(ready, 80) == "http://[fd00::5]:80"
    assert pod_url({**ready, "metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}, 80) is None
    assert pod_url({"status": {**ready["status"], "phase": "Succeeded"}}, 80) is None
    assert pod_url({"status": {**ready["status"], "conditions": []}}, 80) is None
    assert pod_url({"status": {**ready["status"], "podIP": ""}}, 80) is None


# --- configuration --------------------------------------------------------------------------------------


def write_kubeconfig(path: Path, cluster: dict[str, Any], user: dict[str, Any]) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": cluster}],
                "users": [{"name": "u", "user": user}],
                "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "ctx",
            }
        )
    )
    return path


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_kubeconfig_with_a_token(tmp_path: Path) -> None:
    config = kubeconfig(
        write_kubeconfig(tmp_path / "kc", {"server": "http://127.0.0.1:1/"}, {"token": "t0k"})
    )
    assert config == KubeConfig("http://127.0.0.1:1", token="t0k")
    auth = config.auth()
    assert isinstance(auth, BearerToken)
    assert auth.token() == "t0k"
    assert config.verify() is True


def test_kubeconfig_insecure_skip_tls_verify(tmp_path: Path) -> None:
    path = write_kubeconfig(
        tmp_path / "kc", {"server": "https://api:6443", "insecure-skip-tls-verify": True}, {"token": "t"}
    )
    context = kubeconfig(path).verify()
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_NONE
    assert not context.check_hostname


def test_kubeconfig_ca_data_and_relative_files(tmp_path: Path) -> None:
    pem = Path(__import__("certifi").where()).read_bytes()
    path = write_kubeconfig(
        tmp_path / "kc",
        {"server": "https://api:6443", "certificate-authority-data": b64(pem)},
        {"client-certificate": "certs/me.crt", "client-key": "certs/me.key", "tokenFile": "tok"},
    )
    config = kubeconfig(path)
    assert config.ca_data == pem
    assert config.ca_file is None
    assert config.client_cert_file == tmp_path / "certs/me.crt"
    assert config.client_key_file == tmp_path / "certs/me.key"
    assert config.token_file == tmp_path / "tok"
    context = KubeConfig("https://api:6443", ca_data=pem).verify()
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.get_ca_certs()


@pytest.mark.parametrize(
    ("cluster", "user", "message"),
    [
        ({"server": "https://api"}, {"exec": {"command": "aws"}}, "authenticates with exec"),
        ({"server": "https://api"}, {"client-certificate-data": b64(b"x")}, "no key"),
        ({"server": "ftp://api"}, {}, "no http(s) server"),
        ({"server": "https://api", "certificate-authority-data": "%%%"}, {}, "not base64"),
    ],
)
def test_kubeconfig_errors(
    tmp_path: Path, cluster: dict[str, Any], user: dict[str, Any], message: str
) -> None:
    with pytest.raises(KubeConfigError, match=re.escape(message)):
        kubeconfig(write_kubeconfig(tmp_path / "kc", cluster, user))


def test_kubeconfig_unreadable(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError, match="cannot read kubeconfig"):
        kubeconfig(tmp_path / "missing")
    (tmp_path / "bad").write_text("current-context: nope\ncontexts: []\n")
    with pytest.raises(KubeConfigError, match="no context named 'nope'"):
        kubeconfig(tmp_path / "bad")


def test_in_cluster_config_and_the_token_it_rereads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "token").write_text("first\n")
    (tmp_path / "ca.crt").write_bytes(Path(__import__("certifi").where()).read_bytes())
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    config = in_cluster_config(env, root=tmp_path)
    assert config.server == "https://10.96.0.1:443"
    assert config.ca_file == tmp_path / "ca.crt"
    assert config.token_file == tmp_path / "token"
    auth = config.auth()
    assert isinstance(auth, BearerToken)
    assert auth.token() == "first"
    (tmp_path / "token").write_text("rotated\n")
    assert auth.token() == "first"  # read again only after a minute
    monkeypatch.setattr(kube_discovery, "TOKEN_REREAD_SECONDS", 0.0)
    assert auth.token() == "rotated"
    request = httpx.Request("GET", "https://10.96.0.1/api")
    assert next(auth.auth_flow(request)).headers["Authorization"] == "Bearer rotated"


def test_load_config_order(tmp_path: Path) -> None:
    explicit = write_kubeconfig(tmp_path / "a", {"server": "http://explicit:1"}, {})
    from_env = write_kubeconfig(tmp_path / "b", {"server": "http://env:1"}, {})
    assert load_config(str(explicit), {"KUBECONFIG": str(from_env)}).server == "http://explicit:1"
    assert load_config("", {"KUBECONFIG": f"{from_env}:{explicit}"}).server == "http://env:1"
    with pytest.raises(KubeConfigError, match="no Kubernetes config"):
        load_config("", {})


def test_cli_refuses_kubernetes_discovery_without_its_settings(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert cli.main(["--discovery", "kubernetes", "--kube-namespace", "ml"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "--discovery kubernetes needs --kube-selector" in err
    assert "--kube-port" in err
    assert "--kube-namespace" not in err
    args = ["--discovery", "kubernetes", "--kube-namespace", "ml", "--kube-selector", "app=x"]
    assert cli.main([*args, "--kube-port", "8000"]) == EXIT_USAGE
    assert "no Kubernetes config" in capsys.readouterr().err
    assert cli.main([*args, "--kube-port", "8000", "--kubeconfig", str(tmp_path / "nope")]) == EXIT_USAGE
    assert "cannot read kubeconfig" in capsys.readouterr().err


# --- TLS, for real: a server verified with CA data, a client certificate from data -------------------


def make_cert(folder: Path, name: str) -> tuple[bytes, bytes]:
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            f"/CN={name}",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(folder / f"{name}.key"),
            "-out",
            str(folder / f"{name}.crt"),
        ],
        check=True,
        capture_output=True,
    )
    return (folder / f"{name}.crt").read_bytes(), (folder / f"{name}.key").read_bytes()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_tls_with_ca_data_and_a_client_certificate(tmp_path: Path) -> None:
    server_crt, _ = make_cert(tmp_path, "server")
    client_crt, client_key = make_cert(tmp_path, "client")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")
    server_tls.load_verify_locations(cadata=client_crt.decode())
    server_tls.verify_mode = ssl.CERT_REQUIRED
    peers: list[Any] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peers.append(writer.get_extra_info("peercert"))
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_tls)
    port = server.sockets[0].getsockname()[1]
    path = write_kubeconfig(
        tmp_path / "kc",
        {"server": f"https://127.0.0.1:{port}", "certificate-authority-data": b64(server_crt)},
        {"client-certificate-data": b64(client_crt), "client-key-data": b64(client_key)},
    )
    async with server, KubeDiscovery(kubeconfig(path), NS, SELECTOR, PORT).client() as client:
        assert (await client.get("/version")).status_code == 200
    assert peers
    assert dict(x[0] for x in peers[0]["subject"])["commonName"] == "client"


def test_an_unloadable_ca_is_a_config_error(tmp_path: Path) -> None:
    path = write_kubeconfig(
        tmp_path / "kc", {"server": "https://api", "certificate-authority": "missing.crt"}, {"token": "t"}
    )
    with pytest.raises(KubeConfigError, match="TLS settings for https://api"):
        KubeDiscovery(kubeconfig(path), NS, SELECTOR, PORT)
