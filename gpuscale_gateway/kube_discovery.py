"""Replicas from Kubernetes: the ready Pods that match a label selector, watched through the API.

Pods, not EndpointSlices: a real API server refuses loopback addresses in EndpointSlices (so pods on
127.0.0.x, as in the tests, would never appear in one), and a Pod carries everything this needs
directly: its IP, its phase, its Ready condition and its `deletionTimestamp`.

A pod is a replica (named after the pod, `http://{podIP}:{port}`) while it has an IP, is Running, its
Ready condition is True and it is not being deleted; otherwise it is removed from the registry at
once, so nothing new goes to a pod that is stopping (what it already holds finishes: see
`Registry.remove`; a pod ready again at the same address rejoins only once those have finished, so
it never holds more than its slots).

The discovery lists the pods, then watches them (`listwatch.ListWatch`); an expired version (410), a
dropped stream or a server error makes it list again and reconcile, after a short backoff. It never
gives up and never raises out of `run`: the gateway keeps serving the replicas it knows meanwhile.

No Kubernetes client library (the gateway must not depend on one, see the import-linter contracts):
plain httpx over HTTP(S), with a small reader for in-cluster credentials and kubeconfig files.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import os
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Generator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from gpuscale_gateway.listwatch import WATCH_SECONDS, ListWatch
from gpuscale_gateway.registry import Registry, Replica
from gpuscale_gateway.settings import ENV_PREFIX, GatewaySettings

log = logging.getLogger("gpuscale_gateway")

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# Projected service-account tokens rotate (about hourly); client-go re-reads the file every minute.
TOKEN_REREAD_SECONDS = 60.0
# While an earlier incarnation of a pod still holds requests, it is looked at this often (see _sync).
HELD_POLL_SECONDS = 0.05


class KubeConfigError(ValueError):
    """No usable way to reach the API: the message says what is missing or wrong."""


# --- where the API is and how to authenticate -----------------------------------------------------


@dataclass(frozen=True)
class KubeConfig:
    """How to reach the API server. PEM `*_data` and files are alternatives; files win where both are set."""

    server: str
    token: str | None = None
    token_file: Path | None = None  # re-read as it rotates
    ca_file: Path | None = None
    ca_data: bytes | None = None
    client_cert_file: Path | None = None
    client_cert_data: bytes | None = None
    client_key_file: Path | None = None
    client_key_data: bytes | None = None
    insecure: bool = False

    def verify(self) -> ssl.SSLContext | bool:
        """What httpx's `verify` takes: an SSL context for https, True for plain http. Raises
        KubeConfigError when a CA or client certificate cannot be loaded."""
        if not self.server.startswith("https:"):
            return True
        try:
            return self._ssl_context()
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise KubeConfigError(f"TLS settings for {self.server}: {exc}") from None

    def _ssl_context(self) -> ssl.SSLContext:
        if self.insecure:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            cafile = str(self.ca_file) if self.ca_file else None
            cadata = self.ca_data.decode("ascii") if self.ca_data and not cafile else None
            context = ssl.create_default_context(cafile=cafile, cadata=cadata)
        cert = self.client_cert_file or self.client_cert_data
        key = self.client_key_file or self.client_key_data
        if cert is not None:
            with contextlib.ExitStack() as files:
                certfile = files.enter_context(_as_file(cert))
                keyfile = files.enter_context(_as_file(key)) if key is not None else None
                context.load_cert_chain(certfile, keyfile)
        return context

    def auth(self) -> httpx.Auth | None:
        if self.token_file is not None:
            return BearerToken(file=self.token_file)
        if self.token:
            return BearerToken(token=self.token)
        return None


@contextlib.contextmanager
def _as_file(pem: Path | bytes) -> Generator[str, None, None]:
    """ssl loads client certificates only from files: PEM data goes through a private temporary one."""
    if isinstance(pem, Path):
        yield str(pem)
        return
    with tempfile.NamedTemporaryFile(prefix="gpuscale-kube-", suffix=".pem") as handle:
        handle.write(pem)
        handle.flush()
        yield handle.name


class BearerToken(httpx.Auth):
    """`Authorization: Bearer`, from a string or from a file read again every minute (tokens rotate)."""

    def __init__(self, token: str | None = None, file: Path | None = None) -> None:
        self._token = token or ""
        self._file = file
        self._read_at = -TOKEN_REREAD_SECONDS

    def token(self) -> str:
        if self._file is not None and time.monotonic() - self._read_at >= TOKEN_REREAD_SECONDS:
            try:
                self._token = self._file.read_text().strip()
                self._read_at = time.monotonic()
            except OSError as exc:
                # Keep the token we had: a rotation may be in progress; the request says if it is stale.
                log.warning("cannot read the Kubernetes token %s: %s", self._file, exc)
        return self._token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.token()
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        yield request


def in_cluster_config(env: Mapping[str, str] | None = None, root: Path = SERVICE_ACCOUNT) -> KubeConfig:
    """The pod's service account: KUBERNETES_SERVICE_HOST/PORT, its token and CA under `root`."""
    env = os.environ if env is None else env
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise KubeConfigError("not in a pod: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are unset")
    token = root / "token"
    if not token.is_file():
        raise KubeConfigError(f"no service-account token at {token} (automountServiceAccountToken off?)")
    ca = root / "ca.crt"
    host = f"[{host}]" if ":" in host else host
    return KubeConfig(f"https://{host}:{port}", token_file=token, ca_file=ca if ca.is_file() else None)


def _named(entries: Any, name: str, what: str, path: Path) -> dict[str, Any]:
    for entry in entries or []:
        if isinstance(entry, dict) and entry.get("name") == name and isinstance(entry.get(what), dict):
            found: dict[str, Any] = entry[what]
            return found
    raise KubeConfigError(f"{path}: no {what} named {name!r}")


def _pem(section: dict[str, Any], key: str, base: Path, path: Path) -> tuple[Path | None, bytes | None]:
    """`key` (a file, relative to the kubeconfig's folder) or `key-data` (base64 PEM)."""
    data = section.get(f"{key}-data")
    if data:
        try:
            return None, base64.b64decode(str(data), validate=True)
        except binascii.Error:
            raise KubeConfigError(f"{path}: {key}-data is not base64") from None
    file = section.get(key)
    return (base / str(file) if file else None), None


def kubeconfig(path: Path, context: str | None = None) -> KubeConfig:
    """The current (or named) context of a kubeconfig file: its cluster's server, CA and TLS switch and
    its user's token, token file or client certificate. One file; exec and auth-provider plug-ins are
    not run (they would need their binaries in the gateway's image)."""
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise KubeConfigError(f"cannot read kubeconfig {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise KubeConfigError(f"kubeconfig {path} is not YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise KubeConfigError(f"kubeconfig {path} is not a mapping")
    context = context or doc.get("current-context")
    if not context:
        raise KubeConfigError(f"{path}: no current-context")
    ctx = _named(doc.get("contexts"), str(context), "context", path)
    cluster = _named(doc.get("clusters"), str(ctx.get("cluster")), "cluster", path)
    user = _named(doc.get("users"), str(ctx["user"]), "user", path) if ctx.get("user") else {}
    server = cluster.get("server")
    if not server or not str(server).startswith(("http://", "https://")):
        raise KubeConfigError(f"{path}: cluster {ctx.get('cluster')!r} has no http(s) server")
    for plugin in ("exec", "auth-provider"):
        if user.get(plugin):
            raise KubeConfigError(
                f"{path}: user {ctx.get('user')!r} authenticates with {plugin}, which the gateway does not "
                "run; give it a token, tokenFile or client certificate"
            )
    base = path.parent
    ca_file, ca_data = _pem(cluster, "certificate-authority", base, path)
    cert_file, cert_data = _pem(user, "client-certificate", base, path)
    key_file, key_data = _pem(user, "client-key", base, path)
    if (cert_file or cert_data) and not (key_file or key_data):
        raise KubeConfigError(f"{path}: user {ctx.get('user')!r} has a client certificate but no key")
    return KubeConfig(
        server=str(server).rstrip("/"),
        token=str(user["token"]) if user.get("token") else None,
        token_file=base / str(user["tokenFile"]) if user.get("tokenFile") else None,
        ca_file=ca_file,
        ca_data=ca_data,
        client_cert_file=cert_file,
        client_cert_data=cert_data,
        client_key_file=key_file,
        client_key_data=key_data,
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
    )


def load_config(path: str = "", env: Mapping[str, str] | None = None) -> KubeConfig:
    """`path`, else $KUBECONFIG (its first file), else the pod's service account."""
    env = os.environ if env is None else env
    path = path or env.get("KUBECONFIG", "").split(os.pathsep)[0]
    if path:
        return kubeconfig(Path(path).expanduser())
    try:
        return in_cluster_config(env)
    except KubeConfigError as exc:
        raise KubeConfigError(
            f"no Kubernetes config: give --kubeconfig or KUBECONFIG, or run in a pod ({exc})"
        ) from None


# --- pods ----------------------------------------------------------------------------------------


def why_not(pod: Mapping[str, Any]) -> str | None:
    """Why the pod must not get requests now (for the log line of a pod leaving the registry); None
    when it may: it has an IP, is Running and Ready, and is not being deleted."""
    status = pod.get("status") or {}
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return "is terminating"
    if status.get("phase") != "Running":
        return f"is {status.get('phase') or 'Pending'}"
    if not status.get("podIP"):
        return "has no IP"
    conditions = status.get("conditions") or []
    if not any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
        return "is not ready"
    return None


def _url(pod: Mapping[str, Any], port: int) -> str:
    ip = pod["status"]["podIP"]
    return f"http://[{ip}]:{port}" if ":" in ip else f"http://{ip}:{port}"


def pod_url(pod: Mapping[str, Any], port: int) -> str | None:
    """Where the pod takes requests, or None while it must not get any."""
    return None if why_not(pod) is not None else _url(pod, port)


# --- the discovery -------------------------------------------------------------------------------


class KubeDiscovery:
    """Keeps the registry's pod replicas equal to the ready pods matching `selector` in `namespace`.

    It only touches the replicas it added, so replicas from `--replicas` or the admin API stay. A
    replica it keeps is updated in place (`Registry.update`), so a cordon or a down mark set by someone
    else survives the pod's unrelated changes (labels, annotations such as the deletion cost).
    """

    def __init__(
        self,
        config: KubeConfig,
        namespace: str,
        selector: str,
        port: int,
        *,
        slots: int | None = None,
        watch_seconds: int = WATCH_SECONDS,
    ) -> None:
        self.config = config
        self.namespace = namespace
        self.selector = selector
        self.port = port
        self.slots = slots
        self.watch_seconds = watch_seconds
        self.path = f"/api/v1/namespaces/{namespace}/pods"
        self._verify = config.verify()  # here, so a bad CA or certificate is a usage error, not a retry loop
        self._wanted: dict[str, str] = {}  # pod name -> URL, for the pods that should be replicas
        self._owned: set[str] = set()  # replicas this discovery put in the registry
        self._leaving: dict[str, Replica] = {}  # removed replicas still answering requests
        self._held_task: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: GatewaySettings, env: Mapping[str, str] | None = None) -> KubeDiscovery:
        """Raises KubeConfigError naming the missing settings, or why no config was found."""
        missing = [
            f"--{name.replace('_', '-')} ({ENV_PREFIX}{name.upper()})"
            for name in ("kube_namespace", "kube_selector", "kube_port")
            if not getattr(settings, name)
        ]
        if missing:
            raise KubeConfigError(f"--discovery kubernetes needs {', '.join(missing)}")
        return cls(
            load_config(settings.kubeconfig, env),
            settings.kube_namespace,
            settings.kube_selector,
            settings.kube_port,
        )

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[httpx.AsyncClient]:
        async with httpx.AsyncClient(
            base_url=self.config.server,
            auth=self.config.auth(),
            verify=self._verify,
            timeout=httpx.Timeout(10.0),
            headers={"Accept": "application/json", "User-Agent": "gpuscale-gateway"},
            trust_env=False,  # HTTP(S)_PROXY is meant for the clients' traffic, never the API's
        ) as client:
            yield client

    async def run(self, registry: Registry) -> None:
        httpx_log = logging.getLogger("httpx")
        if httpx_log.level == logging.NOTSET and not log.isEnabledFor(logging.DEBUG):
            # httpx logs every request at INFO: a relist or a new watch is routine, not a state change.
            httpx_log.setLevel(logging.WARNING)
        log.info(
            "watching pods in namespace %s matching %r at %s (replicas on port %d)",
            self.namespace,
            self.selector,
            self.config.server,
            self.port,
        )
        try:
            async with self.client() as client:
                await self._list_and_watch(client, registry)
        finally:
            if self._held_task is not None:
                self._held_task.cancel()

    async def _list_and_watch(self, client: httpx.AsyncClient, registry: Registry) -> None:
        await ListWatch(
            client,
            self.path,
            self.selector,
            name=f"pods in {self.namespace}",
            meanwhile="replicas kept meanwhile",
            on_list=lambda pods: self._listed(registry, pods),
            on_event=lambda kind, pod: self._on_event(registry, kind, pod),
            watch_seconds=self.watch_seconds,
        ).run()

    def _listed(self, registry: Registry, pods: list[dict[str, Any]]) -> None:
        """Reconcile with the pods just listed."""
        wanted: dict[str, str] = {}
        for pod in pods:
            url = pod_url(pod, self.port)
            if url is not None:
                wanted[pod["metadata"]["name"]] = url
        gone = (self._owned | self._wanted.keys()) - wanted.keys()
        self._wanted = wanted
        for name in gone:
            self._sync(registry, name, "is gone or not ready")
        for name in wanted:
            self._sync(registry, name)

    def _on_event(self, registry: Registry, kind: str, pod: dict[str, Any]) -> None:
        name = pod["metadata"]["name"]
        why = "is deleted" if kind == "DELETED" else why_not(pod)
        if why is not None:
            self._wanted.pop(name, None)
            self._sync(registry, name, why)
        else:
            self._wanted[name] = _url(pod, self.port)
            self._sync(registry, name)

    def _sync(self, registry: Registry, name: str, why: str = "") -> None:
        """Make the registry agree with `_wanted` for this pod."""
        url = self._wanted.get(name)
        replica = registry.get(name)
        if url is None:
            if name in self._owned:
                self._owned.discard(name)
                log.info("pod %s %s: no new requests go to it", name, why)
                removed = registry.remove(name)
                if removed is not None and removed.outstanding:
                    self._leaving = {n: r for n, r in self._leaving.items() if r.outstanding}
                    self._leaving[name] = removed
            return
        if name in self._owned and replica is not None:
            if replica.url != url:
                log.info("pod %s moved to %s", name, url)
                registry.update(name, url)
            return
        leaving = self._leaving.get(name)
        if leaving is not None and leaving.outstanding and leaving.url == url:
            # Ready again at the same address while its earlier requests still run: a new Replica would
            # start at 0 outstanding and get more than its slots. It comes back once those have finished.
            if self._held_task is None or self._held_task.done():
                self._held_task = asyncio.ensure_future(self._release_held(registry))
            return
        self._leaving.pop(name, None)
        registry.add(name, url, self.slots)
        self._owned.add(name)

    async def _release_held(self, registry: Registry) -> None:
        while True:
            await asyncio.sleep(HELD_POLL_SECONDS)
            waiting = False
            for name in [n for n in self._wanted if n not in self._owned and n in self._leaving]:
                if self._leaving[name].outstanding:
                    waiting = True
                else:
                    self._sync(registry, name)
            if not waiting:
                return
