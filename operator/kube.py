"""The few Kubernetes API calls the operator makes, and the kinds it makes them on.

One table (:data:`KINDS`) says which kinds the operator owns and which verbs it uses on each; the
ClusterRole in ``manifests/install.yaml`` is generated from it (see :mod:`ondeck.operator.render.install`),
so the operator is granted exactly what this module calls. Calls go through the official client's
configuration and connection pool (kubeconfig or in-cluster service account) but speak plain JSON:
server-side apply for what the operator renders, merge patches for status, label-selected lists and
deletes for pruning, and a get of the Secret that signs retrain webhooks. kopf does the watching.
"""
from __future__ import annotations

import base64
import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

import urllib3

log = logging.getLogger("ondeck.operator")
FIELD_MANAGER = "ondeck-operator"
MANAGED_BY = {"app.kubernetes.io/managed-by": FIELD_MANAGER}


@dataclass(frozen=True)
class Kind:
    kind: str
    group: str  # "" for the core API
    versions: tuple[str, ...]  # preferred first; the first one the cluster serves is used
    plural: str
    verbs: tuple[str, ...]
    optional: bool = False  # rendered only when the cluster serves it (a CRD someone else installs)

    def path(self, version: str, namespace: str, name: str | None = None, sub: str | None = None) -> str:
        root = f"/api/{version}" if not self.group else f"/apis/{self.group}/{version}"
        return "/".join(p for p in (root, "namespaces", namespace, self.plural, name, sub) if p)


# Apply = create when missing + patch; prune = list + delete.
_OWNED = ("create", "patch", "list", "delete")
DEPLOYMENT = Kind("Deployment", "apps", ("v1",), "deployments", _OWNED + ("watch",))  # watched for readiness
SERVICE = Kind("Service", "", ("v1",), "services", _OWNED)
CONFIGMAP = Kind("ConfigMap", "", ("v1",), "configmaps", _OWNED)
HPA = Kind("HorizontalPodAutoscaler", "autoscaling", ("v2",), "horizontalpodautoscalers", _OWNED)
SERVICEMONITOR = Kind("ServiceMonitor", "monitoring.coreos.com", ("v1",), "servicemonitors", _OWNED, optional=True)
HTTPROUTE = Kind("HTTPRoute", "gateway.networking.k8s.io", ("v1",), "httproutes", _OWNED, optional=True)
VIRTUALSERVICE = Kind("VirtualService", "networking.istio.io", ("v1", "v1beta1"), "virtualservices", _OWNED, optional=True)
OWNED_KINDS = (DEPLOYMENT, SERVICE, CONFIGMAP, HPA, SERVICEMONITOR, HTTPROUTE, VIRTUALSERVICE)
BY_KIND = {k.kind: k for k in OWNED_KINDS}

# What the operator itself is, and what kopf needs to watch it and report on it.
MODELDEPLOYMENT = Kind("ModelDeployment", "ondeck.io", ("v1alpha1",), "modeldeployments",
                       ("list", "watch", "patch"))  # patch: kopf's progress annotations
SECRET = Kind("Secret", "", ("v1",), "secrets", ("get",))
RBAC_RULES: tuple[dict[str, Any], ...] = (
    *({"apiGroups": [k.group], "resources": [k.plural], "verbs": list(k.verbs)} for k in OWNED_KINDS),
    {"apiGroups": [MODELDEPLOYMENT.group], "resources": [MODELDEPLOYMENT.plural], "verbs": list(MODELDEPLOYMENT.verbs)},
    {"apiGroups": [MODELDEPLOYMENT.group], "resources": [f"{MODELDEPLOYMENT.plural}/status"], "verbs": ["patch"]},
    # ownerReferences with blockOwnerDeletion need update on the owner's finalizers where the
    # OwnerReferencesPermissionEnforcement admission plugin is on.
    {"apiGroups": [MODELDEPLOYMENT.group], "resources": [f"{MODELDEPLOYMENT.plural}/finalizers"], "verbs": ["update"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},  # kopf.event / kopf.warn
    # The retrain webhook's signing key (spec.retrain.webhook.secretRef): read by name when a request
    # is sent, never listed or watched, so the operator cannot enumerate a namespace's Secrets.
    {"apiGroups": [SECRET.group], "resources": [SECRET.plural], "verbs": list(SECRET.verbs)},
)


class SecretUnavailable(Exception):
    """A Secret's key cannot be had; the message says exactly what is missing (never a value)."""


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message

    @property
    def retryable(self) -> bool:
        """Overload or outage (429, 5xx, unreachable): the same call may work a little later."""
        return self.status == 429 or self.status >= 500


class Kube:
    """A thread-safe client for the calls above (kopf runs sync handlers in a thread pool)."""

    def __init__(self, kubeconfig: str | None = None, *, pool_size: int = 32, discovery_ttl: float = 30.0):
        from kubernetes import client, config

        cfg = client.Configuration()
        if kubeconfig:
            config.load_kube_config(kubeconfig, client_configuration=cfg)
        else:
            try:
                config.load_incluster_config(client_configuration=cfg)
            except config.ConfigException:
                config.load_kube_config(client_configuration=cfg)
        cfg.connection_pool_maxsize = pool_size
        self._api = client.ApiClient(cfg)
        self._api.user_agent = FIELD_MANAGER  # the manager named in managedFields of status patches
        self._discovery_ttl = discovery_ttl
        self._served: dict[str, tuple[float, tuple[str, ...]]] = {}
        self._lock = threading.Lock()

    def credentials(self) -> dict[str, Any]:
        """Server and credentials as loaded, for kopf's own connection (one source for both)."""
        cfg = self._api.configuration
        header = cfg.get_api_key_with_prefix("BearerToken") or ""
        scheme, _, token = header.rpartition(" ")
        return {"server": cfg.host, "ca_path": cfg.ssl_ca_cert, "insecure": not cfg.verify_ssl,
                "certificate_path": cfg.cert_file, "private_key_path": cfg.key_file,
                "scheme": scheme or None, "token": token or None}

    # --- raw requests --------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, *, content_type: str | None = None,
                query: Iterable[tuple[str, str]] = ()) -> Any:
        headers = {"Content-Type": content_type} if content_type else {}
        method, url, headers, body, _ = self._api.param_serialize(
            method, path, query_params=list(query), header_params=headers, body=body, auth_settings=["BearerToken"])
        try:
            response = self._api.rest_client.request(method, url, headers=headers, body=body, _request_timeout=(5, 30))
            data = response.read()
        except urllib3.exceptions.HTTPError as exc:  # unreachable or timed out: worth retrying, like a 503
            raise ApiError(503, f"cannot reach the API server: {exc}") from None
        if response.status >= 400:
            raise ApiError(response.status, _message(data))
        return json.loads(data) if data else None

    # --- what the operator does ----------------------------------------------------------------

    def served_version(self, kind: Kind) -> str | None:
        """The version of ``kind`` the cluster serves (None: its CRD is not installed); cached briefly."""
        if not kind.group or not kind.optional:
            return kind.versions[0]
        now = time.monotonic()
        with self._lock:
            cached = self._served.get(kind.group)
        if cached is None or now - cached[0] > self._discovery_ttl:
            try:
                group = self.request("GET", f"/apis/{kind.group}")
                versions = tuple(v["version"] for v in group.get("versions", ()))
            except ApiError as exc:
                if exc.status != 404:
                    raise
                versions = ()
            cached = (now, versions)
            with self._lock:
                self._served[kind.group] = cached
        return next((v for v in kind.versions if v in cached[1]), None)

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply: create or update ``obj``, owning exactly the fields it sets."""
        kind = BY_KIND[obj["kind"]]
        version = obj["apiVersion"].rsplit("/", 1)[-1]
        path = kind.path(version, obj["metadata"]["namespace"], obj["metadata"]["name"])
        return self.request("PATCH", path, obj, content_type="application/apply-patch+yaml",
                            query=[("fieldManager", FIELD_MANAGER), ("force", "true")])

    def list_owned(self, kind: Kind, version: str, namespace: str, instance: str) -> list[dict[str, Any]]:
        selector = ",".join(f"{k}={v}" for k, v in {**MANAGED_BY, "app.kubernetes.io/instance": instance}.items())
        return self.request("GET", kind.path(version, namespace), query=[("labelSelector", selector)])["items"]

    def delete(self, kind: Kind, version: str, namespace: str, name: str) -> None:
        try:
            self.request("DELETE", kind.path(version, namespace, name), {"propagationPolicy": "Background"},
                         content_type="application/json")
        except ApiError as exc:
            if exc.status != 404:
                raise

    def secret_key(self, namespace: str, name: str, key: str) -> bytes:
        """The bytes of ``key`` in Secret ``namespace/name``, read now (a rotated key is used at once)."""
        where = f"Secret {namespace}/{name}"
        try:
            secret = self.request("GET", SECRET.path(SECRET.versions[0], namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                raise SecretUnavailable(f"{where} does not exist") from None
            if exc.status == 403:
                raise SecretUnavailable(f"the operator may not read {where} (RBAC: it needs get on secrets)") from None
            raise SecretUnavailable(f"cannot read {where}: {exc}") from None
        value = (secret.get("data") or {}).get(key)
        if value is None:
            raise SecretUnavailable(f"{where} has no key {key!r}")
        raw = base64.b64decode(value)
        if not raw:
            raise SecretUnavailable(f"{where} key {key!r} is empty")
        return raw

    def patch_status_fields(self, namespace: str, name: str, fields: dict[str, Any]) -> None:
        """Set whole ``status.<field>`` values with a JSON patch, which stores nulls inside them as they are."""
        path = MODELDEPLOYMENT.path(MODELDEPLOYMENT.versions[0], namespace, name, "status")
        ops = [{"op": "add", "path": f"/status/{k}", "value": v} for k, v in fields.items()]
        try:
            self.request("PATCH", path, ops, content_type="application/json-patch+json")
        except ApiError as exc:
            if exc.status != 404:
                raise

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        path = MODELDEPLOYMENT.path(MODELDEPLOYMENT.versions[0], namespace, name, "status")
        try:
            self.request("PATCH", path, {"status": status}, content_type="application/merge-patch+json")
        except ApiError as exc:
            if exc.status != 404:  # deleted meanwhile: nothing to report on
                raise

    def post_event(self, involved: dict[str, Any], type: str, reason: str, message: str) -> None:
        """A core/v1 Event about ``involved`` (as kopf.event writes them, but callable from any thread:
        kopf's own poster works only inside its per-object handlers). Best effort: an Event that cannot
        be written is logged, never retried, and never stops the controller that reported it."""
        meta = involved["metadata"]
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {"apiVersion": involved.get("apiVersion"), "kind": involved.get("kind"),
                               "name": meta["name"], "namespace": meta["namespace"], "uid": meta.get("uid")},
            "type": type, "reason": reason, "message": message[:1024],
            "source": {"component": FIELD_MANAGER}, "reportingComponent": FIELD_MANAGER,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        try:
            self.request("POST", f"/api/v1/namespaces/{meta['namespace']}/events", event)
        except ApiError as exc:
            log.warning("%s/%s: event %s not written: %s", meta["namespace"], meta["name"], reason, exc)


def _message(data: bytes) -> str:
    try:
        return json.loads(data).get("message") or data.decode(errors="replace")
    except (ValueError, AttributeError):
        return data.decode(errors="replace").strip()
