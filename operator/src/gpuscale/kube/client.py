"""A small async Kubernetes API client for the operator's own reads and writes.

kopf watches and patches its resource itself; the operator also creates and patches the objects it
owns, lists pods and scales Deployments. This client logs in with kopf's own credentials (whatever
``@kopf.on.login`` found: in-cluster service account or kubeconfig), so there is one source of
truth for how the operator reaches the API, and keeps one connection pool for the process.
"""

from __future__ import annotations

import functools
import json
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import httpx

Obj = dict[str, Any]
PatchKind = Literal["merge", "json", "strategic"]
_MEDIA = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
}


class KubeError(RuntimeError):
    """A non-2xx answer, with the Status body's reason and message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409


def path(api_version: str, plural: str, namespace: str | None = None, name: str = "", sub: str = "") -> str:
    """``/apis/apps/v1/namespaces/ns/deployments/x/scale`` from its parts (core kinds under ``/api/v1``)."""
    root = f"/apis/{api_version}" if "/" in api_version else f"/api/{api_version}"
    parts = [root]
    if namespace:
        parts.append(f"namespaces/{namespace}")
    parts.append(plural)
    if name:
        parts.append(name)
    if sub:
        parts.append(sub)
    return "/".join(parts)


# The kinds the operator builds (objects.build_owned), by (apiVersion, kind): their plural names.
PLURALS: Mapping[tuple[str, str], str] = {
    ("v1", "Service"): "services",
    ("v1", "ServiceAccount"): "serviceaccounts",
    ("apps/v1", "Deployment"): "deployments",
    ("rbac.authorization.k8s.io/v1", "Role"): "roles",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "rolebindings",
}


def object_path(obj: Mapping[str, Any], with_name: bool = True) -> str:
    meta = obj["metadata"]
    plural = PLURALS[(obj["apiVersion"], obj["kind"])]
    return path(obj["apiVersion"], plural, meta.get("namespace"), meta["name"] if with_name else "")


@dataclass(frozen=True)
class Credentials:
    """Where the API is and how to log in: built from kopf's ConnectionInfo, or by hand in tests."""

    server: str
    token: str | None = None
    ca_path: str | None = None
    insecure: bool = False
    certificate_path: str | None = None
    private_key_path: str | None = None

    @classmethod
    def from_kopf(cls, info: Any) -> Credentials:
        return cls(
            server=str(info.server),
            token=info.token,
            ca_path=info.ca_path,
            insecure=bool(info.insecure),
            certificate_path=info.certificate_path,
            private_key_path=info.private_key_path,
        )


@functools.cache
def tls_context(credentials: Credentials) -> ssl.SSLContext:
    """One per set of credentials: loading a CA bundle costs ~20 ms and ~1 MiB, and the operator makes
    a client per service (httpx builds a context even for plain http unless given one)."""
    context = ssl.create_default_context(cafile=credentials.ca_path)
    if credentials.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if credentials.certificate_path:
        context.load_cert_chain(credentials.certificate_path, credentials.private_key_path)
    return context


class KubeClient:
    def __init__(self, credentials: Credentials, timeout: float = 10.0) -> None:
        verify = tls_context(credentials)
        headers = {"Accept": "application/json"}
        if credentials.token:
            headers["Authorization"] = f"Bearer {credentials.token}"
        self._http = httpx.AsyncClient(
            base_url=credentials.server, headers=headers, verify=verify, timeout=timeout
        )

    @property
    def http(self) -> httpx.AsyncClient:
        """The underlying client (base URL and credentials set), for watch streams."""
        return self._http

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, method: str, url: str, body: Any = None, content_type: str = "application/json",
                    params: Mapping[str, str] | None = None) -> Obj:  # fmt: skip
        content = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": content_type} if content is not None else {}
        answer = await self._http.request(method, url, content=content, headers=headers, params=params)
        try:
            data = answer.json()
        except ValueError:
            data = {}
        if answer.status_code >= 400:
            raise KubeError(
                answer.status_code, str(data.get("reason", "")), str(data.get("message", answer.text))
            )
        assert isinstance(data, dict)
        return data

    async def get(self, url: str) -> Obj:
        return await self._send("GET", url)

    async def list(self, url: str, label_selector: str = "") -> list[Obj]:
        params = {"labelSelector": label_selector} if label_selector else None
        items = (await self._send("GET", url, params=params)).get("items") or []
        return list(items)

    async def create(self, url: str, body: Obj) -> Obj:
        return await self._send("POST", url, body)

    async def patch(self, url: str, body: Any, kind: PatchKind = "merge") -> Obj:
        return await self._send("PATCH", url, body, _MEDIA[kind])

    async def delete(self, url: str) -> Obj:
        return await self._send("DELETE", url)
