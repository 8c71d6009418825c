"""``ondeck run``'s retrain webhook with a secretRef: signed with the key from --secrets-dir, never unsigned.

The controller's delivery step on its own (no servers: a pending retrain request is all it needs),
posting to the real receiver of :mod:`ondeck.local.receiver`, which checks the signature.
"""
from __future__ import annotations

import yaml

from ondeck import monitor as mon
from ondeck.local import manifest as local_manifest
from ondeck.local.controller import Controller
from ondeck.local.receiver import Receiver
from ondeck.local.state import StateDir
from tests.helpers import wait_for

KEY = b"local-hmac-key"
NOW = 1_718_035_200.0


def test_ondeck_run_signs_with_the_key_file_and_waits_for_a_missing_one(tmp_path, examples_dir):
    secrets_dir = tmp_path / "secrets"
    events: list[str] = []
    with Receiver(secret=KEY) as receiver:
        path = tmp_path / "md.yaml"
        path.write_text(yaml.safe_dump({
            "apiVersion": "ondeck.io/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "churn"},
            "spec": {"variants": [{"name": "stable", "version": "v1", "uri": (examples_dir / "churn" / "v1").as_uri()}],
                     "retrain": {"webhook": {"url": f"{receiver.url}/retrain", "secretRef": {"name": "hook", "key": "hmac"}}}}}))
        controller = Controller(local_manifest.load(path), StateDir(tmp_path / "state"), on_event=events.append,
                                secrets_dir=str(secrets_dir))
        monitor = mon.Monitor(controller.dep.monitor_spec("stable"), controller.dep.packages["stable"].reference)
        payload = {"id": "churn-v1-1", "model": "churn", "version": "v1", "time": NOW, "reason": "drift in tenure",
                   "evidence": {}}
        controller.state = {"monitor": {**monitor.initial_state(), "pendingRetrain": {
            "id": "churn-v1-1", "payload": payload, "attempts": 0, "nextAttemptAt": NOW, "lastError": None}}}
        try:
            controller._deliver(NOW)
            assert controller._delivery is None and receiver.requests() == []  # not sent unsigned
            pending = controller.state["monitor"]["pendingRetrain"]
            assert pending["attempts"] == 1
            assert pending["lastError"] == ("not sent, cannot sign it (secretRef): Secret 'hook' key 'hmac': "
                                            f"no file {secrets_dir}/hook/hmac")
            assert events[-1].endswith("; trying again later") and "no file" in events[-1]

            (secrets_dir / "hook").mkdir(parents=True)
            (secrets_dir / "hook" / "hmac").write_bytes(KEY)
            controller._deliver(NOW + 2)
            wait_for(lambda: controller._delivery[1].done(), timeout=10, what="the webhook POST")
            controller._deliver(NOW + 3)
        finally:
            controller._webhooks.shutdown(wait=True)
        [call] = receiver.requests()
    assert call["verified"] is True and call["body"]["id"] == "churn-v1-1"
    assert controller.state["monitor"]["pendingRetrain"] is None
    assert controller.state["monitor"]["delivered"][-1] == {"id": "churn-v1-1", "at": NOW + 3, "attempts": 2}
