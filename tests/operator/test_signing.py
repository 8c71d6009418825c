"""Retrain webhook signing: the scheme, the POST, the drift controller's use of a Secret, and a real one.

The unit tests sign and check with :mod:`ondeck.signing`; the receiver in the others is the real
HTTP one of :mod:`ondeck.local.receiver`, checking signatures on the raw bytes it got, as a CI hook
should. The cluster test reads a real Secret from the real apiserver (tests/fixtures/cluster.py).
"""
from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from ondeck import signing, webhooks
from ondeck.local import secrets as local_secrets
from ondeck.local.receiver import Receiver
from ondeck.operator.kube import Kube, SecretUnavailable
from ondeck.operator.monitoring import DriftController
from ondeck.operator.packages import Packages
from ondeck.spec import parse_manifest
from ondeck.spec.model import SecretKeyRef

KEY = b"s3cr3t-hmac-key"
BODY = json.dumps({"id": "churn-v1-1", "model": "churn", "version": "v1"}).encode()
NOW = 1_718_035_200.0


# --- the scheme ------------------------------------------------------------------------------------


def test_signature_is_hmac_sha256_of_timestamp_dot_body():
    headers = signing.headers(KEY, BODY, NOW + 0.7)
    assert headers[signing.TIMESTAMP_HEADER] == "1718035200"
    expected = hmac.new(KEY, b"1718035200." + BODY, hashlib.sha256).hexdigest()
    assert headers[signing.SIGNATURE_HEADER] == f"sha256={expected}"
    assert signing.verify(KEY, BODY, headers[signing.SIGNATURE_HEADER], headers[signing.TIMESTAMP_HEADER],
                          now=NOW + 299) == 1718035200


@pytest.mark.parametrize("tamper, reason", [
    (lambda sig, ts, body, key: (sig, ts, body + b" ", key), "does not match"),
    (lambda sig, ts, body, key: (sig, ts, body, b"another key"), "does not match"),
    (lambda sig, ts, body, key: (sig, str(int(ts) + 1), body, key), "does not match"),  # a replay with a fresh time
    (lambda sig, ts, body, key: (sig.replace("sha256=", "sha1="), ts, body, key), "does not start with 'sha256='"),
    (lambda sig, ts, body, key: (None, ts, body, key), "missing X-Ondeck-Signature"),
    (lambda sig, ts, body, key: (sig, None, body, key), "missing X-Ondeck-Timestamp"),
    (lambda sig, ts, body, key: (sig, "yesterday", body, key), "not whole Unix seconds"),
    (lambda sig, ts, body, key: ("sha256=é" + sig[8:], ts, body, key), "does not match"),  # not even ASCII
])
def test_every_tampered_request_is_refused_with_the_reason(tamper, reason):
    headers = signing.headers(KEY, BODY, NOW)
    sig, ts, body, key = tamper(headers[signing.SIGNATURE_HEADER], headers[signing.TIMESTAMP_HEADER], BODY, KEY)
    with pytest.raises(signing.BadSignature, match=reason):
        signing.verify(key, body, sig, ts, now=NOW)


def test_an_old_signature_is_a_replay():
    headers = signing.headers(KEY, BODY, NOW)
    with pytest.raises(signing.BadSignature, match="a replay"):
        signing.verify(KEY, BODY, headers[signing.SIGNATURE_HEADER], headers[signing.TIMESTAMP_HEADER], now=NOW + 301)


def test_an_empty_secret_signs_nothing():
    with pytest.raises(ValueError):
        signing.headers(b"", BODY, NOW)


# --- the POST --------------------------------------------------------------------------------------


def test_post_signs_the_bytes_it_sends_and_an_unsigned_post_is_refused():
    payload = {"id": "churn-v1-1", "model": "churn", "version": "v1", "evidence": {"drift": {"x": 1.5}}}
    with Receiver(secret=KEY) as receiver:
        assert webhooks.post(f"{receiver.url}/retrain", payload, secret=KEY) is None
        assert webhooks.post(f"{receiver.url}/retrain", payload) == "HTTP 401"
        assert webhooks.post(f"{receiver.url}/retrain", payload, secret=b"wrong") == "HTTP 401"
        signed, unsigned, wrong = receiver.requests()
    assert signed["verified"] is True and signed["body"] == payload and signed["id"] == "churn-v1-1"
    assert unsigned["verified"] is False and "missing X-Ondeck-Signature" in unsigned["error"]
    assert wrong["verified"] is False and "does not match" in wrong["error"]


# --- the operator's drift controller ---------------------------------------------------------------


@pytest.fixture
def drift_md(examples_dir, request):
    secret_ref = getattr(request, "param", {"name": "hook", "key": "hmac"})

    def make(url: str):
        return parse_manifest({"apiVersion": "ondeck.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "churn"},
                               "spec": {"variants": [{"name": "stable", "version": "v1",
                                                      "uri": (examples_dir / "churn" / "v1").as_uri()}],
                                        "monitoring": {"drift": {"interval": "5m"}},
                                        "retrain": {"webhook": {"url": url, "secretRef": secret_ref}}}})
    return make


def pending_state(controller: DriftController, md, now: float) -> dict:
    """The monitor's state with a retrain request due now and no look due (the last one was just taken)."""
    first = controller.tick(md, "team-a", md.spec.variants[0], None, now).state
    payload = {"id": "churn-v1-1", "model": "churn", "version": "v1", "time": now, "reason": "drift in tenure",
               "evidence": {}}
    return {**first, "pendingRetrain": {"id": "churn-v1-1", "payload": payload, "attempts": 0, "nextAttemptAt": now,
                                        "lastError": None}}


def test_a_missing_secret_sends_nothing_says_what_is_missing_and_is_retried(drift_md):
    store: dict[tuple[str, str, str], bytes] = {}

    def secrets(namespace: str, name: str, key: str) -> bytes:
        if (namespace, name, key) not in store:
            raise SecretUnavailable(f"Secret {namespace}/{name} does not exist")
        return store[(namespace, name, key)]

    with Receiver(secret=KEY) as receiver:
        md = drift_md(f"{receiver.url}/retrain")
        controller = DriftController(None, Packages(), secrets=secrets)
        state = pending_state(controller, md, NOW)

        tick = controller.tick(md, "team-a", md.spec.variants[0], state, NOW)
        assert receiver.requests() == []  # never unsigned
        pending = tick.state["pendingRetrain"]
        assert pending["attempts"] == 1 and pending["nextAttemptAt"] == NOW + 2
        assert pending["lastError"] == "not sent, cannot sign it (secretRef): Secret team-a/hook does not exist"
        [(kind, reason, message)] = tick.events
        assert (kind, reason) == ("Warning", "RetrainWebhookNotSigned")
        assert "churn-v1-1 not sent" in message and "Secret team-a/hook does not exist" in message

        early = controller.tick(md, "team-a", md.spec.variants[0], tick.state, NOW + 1)
        assert early.events == [] and early.state["pendingRetrain"]["attempts"] == 1  # backing off

        store[("team-a", "hook", "hmac")] = KEY
        done = controller.tick(md, "team-a", md.spec.variants[0], early.state, NOW + 2)
        [call] = receiver.requests()
    assert call["verified"] is True and call["id"] == "churn-v1-1"
    assert done.state["pendingRetrain"] is None and done.state["delivered"][-1]["id"] == "churn-v1-1"
    assert [r for _, r, _ in done.events] == ["RetrainWebhookDelivered"]


def test_an_operator_without_secret_access_sends_nothing(drift_md):
    with Receiver() as receiver:
        md = drift_md(f"{receiver.url}/retrain")
        controller = DriftController(None, Packages())  # no secrets reader
        tick = controller.tick(md, "team-a", md.spec.variants[0], pending_state(controller, md, NOW), NOW)
        assert receiver.requests() == []
    assert "started without access to Secrets" in tick.state["pendingRetrain"]["lastError"]


@pytest.mark.parametrize("drift_md", [None], indirect=True)
def test_without_secret_ref_the_request_goes_unsigned(drift_md):
    with Receiver() as receiver:
        md = drift_md(f"{receiver.url}/retrain")
        controller = DriftController(None, Packages(), secrets=lambda *a: pytest.fail("no secret to read"))
        controller.tick(md, "team-a", md.spec.variants[0], pending_state(controller, md, NOW), NOW)
        [call] = receiver.requests()
    assert call["signature"] is None and call["timestamp"] is None


# --- ondeck run's secrets directory ------------------------------------------------------------------


def test_local_secrets_are_files_laid_out_like_mounted_secrets(tmp_path):
    ref = SecretKeyRef(name="hook", key="hmac")
    with pytest.raises(local_secrets.SecretUnavailable, match="given no --secrets-dir"):
        local_secrets.read(None, ref)
    with pytest.raises(local_secrets.SecretUnavailable, match=f"no file {tmp_path}/hook/hmac"):
        local_secrets.read(tmp_path, ref)
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "hmac").write_bytes(b"")
    with pytest.raises(local_secrets.SecretUnavailable, match="is empty"):
        local_secrets.read(tmp_path, ref)
    (tmp_path / "hook" / "hmac").write_bytes(KEY)
    assert local_secrets.read(tmp_path, ref) == KEY
    with pytest.raises(local_secrets.SecretUnavailable, match="not a Secret name"):
        local_secrets.read(tmp_path / "hook", SecretKeyRef(name="..", key="etc"))


# --- a real Secret in the real control plane ---------------------------------------------------------


@pytest.mark.k8s
def test_the_operator_signs_with_a_real_secret_and_waits_for_a_missing_one(k8s_cluster, k8s_namespace, drift_md):
    cluster, ns = k8s_cluster, k8s_namespace
    kube = Kube(cluster.kubeconfig)
    with Receiver(secret=KEY) as receiver:
        md = drift_md(f"{receiver.url}/retrain")
        controller = DriftController(None, Packages(), secrets=kube.secret_key)
        state = pending_state(controller, md, NOW)

        tick = controller.tick(md, ns, md.spec.variants[0], state, NOW)
        assert tick.state["pendingRetrain"]["lastError"].endswith(f"Secret {ns}/hook does not exist")

        cluster.kubectl("-n", ns, "create", "secret", "generic", "hook", "--from-literal=other=x")
        tick = controller.tick(md, ns, md.spec.variants[0], tick.state, NOW + 2)
        assert tick.state["pendingRetrain"]["lastError"].endswith(f"Secret {ns}/hook has no key 'hmac'")
        assert receiver.requests() == []  # nothing unsigned, ever

        cluster.kubectl("-n", ns, "delete", "secret", "hook")
        cluster.kubectl("-n", ns, "create", "secret", "generic", "hook", f"--from-literal=hmac={KEY.decode()}")
        tick = controller.tick(md, ns, md.spec.variants[0], tick.state, NOW + 6)
        [call] = receiver.requests()
    assert call["verified"] is True and call["body"]["id"] == "churn-v1-1"
    assert tick.state["pendingRetrain"] is None and tick.state["delivered"][-1]["attempts"] == 3
