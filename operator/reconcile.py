"""Make the cluster match a ModelDeployment, and say in its status how far it got.

One pass: parse the spec (the same parser as ``ondeck run``), check the model URIs, work out the
weights (:func:`ondeck.spec.traffic.desired_weights`, which is where the rollout controller's state
plugs in), render, server-side apply every object, prune what the spec no longer asks for, and
write the status. Passes are idempotent, so create, update, resume and the periodic resync all run
the same one. Deployment readiness arrives between passes through :meth:`Reconciler.deployment_changed`,
which only marks the status stale: :meth:`Reconciler.flush` rewrites stale statuses a few times a
second, so a Deployment going through four states in a second costs one write, not four.

The reconciler keeps a little memory per ModelDeployment (its latest body, the last problems, the
Deployments' replicas, the status it last wrote) so that a readiness change costs no API reads
and an unchanged status costs no write.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ondeck.operator import status as st
from ondeck.operator.kube import DEPLOYMENT, OWNED_KINDS, ApiError, Kube
from ondeck.operator.render import PROVIDER_KINDS, Context, render
from ondeck.spec import model as m
from ondeck.spec.traffic import desired_weights, retired_variants
from ondeck.spec.uri import UnsupportedURI, parse_uri
from ondeck.spec.validate import SpecError, parse_manifest

log = logging.getLogger("ondeck.operator")
Key = tuple[str, str]  # (namespace, name)


class Retry(Exception):
    """The API failed in a way worth retrying (kopf backs off and calls the handler again)."""


@dataclass
class Known:
    body: dict[str, Any]
    md: m.ModelDeployment | None = None
    weights: dict[str, int] = field(default_factory=dict)
    problems: list[st.Problem] = field(default_factory=list)
    served: dict[str, str] = field(default_factory=dict)
    reconciled_at: float = 0.0
    written: dict[str, Any] | None = None  # the status last written
    # Status the rollout and monitoring controllers own (rollout state, analysis runs, drift...) and
    # their conditions: written with the operator's own, under the same lock, so no write drops another's.
    controlled: dict[str, Any] = field(default_factory=dict)
    controlled_conditions: list[dict[str, Any]] = field(default_factory=list)
    # Each owned object as last applied: a controller's re-render (new weights) applies only what it
    # changed, usually the router's ConfigMap, instead of every object of the ModelDeployment.
    applied: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


class Reconciler:
    def __init__(self, kube: Kube, *, image: str):
        self.kube = kube
        self.image = image
        self._known: dict[Key, Known] = {}
        self._replicas: dict[Key, dict[str, st.Replicas]] = defaultdict(dict)
        self._locks: dict[Key, threading.Lock] = defaultdict(threading.Lock)
        self._stale: set[Key] = set()  # statuses to rewrite at the next flush
        self._guard = threading.Lock()  # for the containers above

    # --- entry points (called from kopf handlers and the resync loop) ------------------------------

    def reconcile(self, body: dict[str, Any], *, prune: bool = True) -> list[st.Problem]:
        """One pass for one ModelDeployment; returns the problems the previous pass did not have (for events)."""
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        with self._lock(key):
            known = self._remember(key, body)
            before = set(known.problems)
            known.md, known.problems = self._parse(key, body)
            try:
                if known.md is not None and not known.problems:
                    self._apply(key, known, prune)
                known.reconciled_at = time.monotonic()
                self._write_status(key, known)
            except ApiError as exc:
                if exc.retryable:
                    raise Retry(str(exc)) from None
                raise  # a 4xx here is a bug or missing RBAC: let kopf log it with its traceback
            return [p for p in known.problems if p not in before]

    def deployment_changed(self, namespace: str, instance: str, deployment: dict[str, Any], deleted: bool) -> bool:
        """Record a Deployment's readiness; its owner's status is rewritten at the next flush.

        Returns True if the Deployment was deleted while its owner still wants it (the caller
        reconciles the owner to put it back).
        """
        key, name = (namespace, instance), deployment["metadata"]["name"]
        with self._lock(key):
            if deleted:
                self._replicas[key].pop(name, None)
            else:
                self._replicas[key][name] = st.Replicas.of(deployment)
            known = self._known.get(key)
            if known is None or known.md is None:
                return False  # its owner's first pass has not run yet; it will write the status
            with self._guard:
                self._stale.add(key)
            return deleted and not known.body["metadata"].get("deletionTimestamp")

    def stale(self) -> list[Key]:
        """The ModelDeployments whose status waits for a flush (and forget that they do)."""
        with self._guard:
            keys, self._stale = list(self._stale), set()
        return keys

    def flush(self, key: Key) -> None:
        with self._lock(key):
            known = self._known.get(key)
            if known is None or known.md is None:
                return
            try:
                self._write_status(key, known)
            except ApiError as exc:
                log.warning("%s/%s: status not written, trying again: %s", *key, exc)
                with self._guard:
                    self._stale.add(key)

    def observed(self, body: dict[str, Any]) -> None:
        """Any change to a ModelDeployment, status included: keep the latest body for status merges."""
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        with self._lock(key):
            if key in self._known:
                self._remember(key, body)

    def forget(self, namespace: str, name: str) -> None:
        with self._guard:
            self._known.pop((namespace, name), None)
            self._replicas.pop((namespace, name), None)
            self._locks.pop((namespace, name), None)
            self._stale.discard((namespace, name))

    def controller_update(self, namespace: str, name: str, fields: dict[str, Any],
                          conditions: list[dict[str, Any]] | None = None, *, rerender: bool = False) -> None:
        """The controllers' part of the status (``rollout``, ``analysisRuns``, ``drift`` ...), and
        conditions of types the operator does not own. ``rerender``: the rollout moved weights or
        scaled a variant, so apply the rendered objects again (the router's ConfigMap above all)."""
        key = (namespace, name)
        with self._lock(key):
            known = self._known.get(key)
            if known is None or known.md is None:
                return  # not reconciled yet (or its spec is unusable): the next tick tries again
            known.controlled.update(fields)
            if conditions is not None:
                known.controlled_conditions = conditions
            try:
                if rerender and not known.problems:
                    self._apply(key, known, prune=False, changed_only=True)
                self._write_status(key, known)
            except ApiError as exc:
                if exc.retryable:
                    raise Retry(str(exc)) from None
                raise

    def parsed(self, namespace: str, name: str) -> m.ModelDeployment | None:
        """The spec as the last pass parsed it (None before the first pass, or when it was unusable)."""
        known = self._known.get((namespace, name))
        return known.md if known and not any(p.blocking for p in known.problems) else None

    def body(self, namespace: str, name: str) -> dict[str, Any] | None:
        known = self._known.get((namespace, name))
        return known.body if known else None

    def usable(self) -> list[tuple[dict[str, Any], m.ModelDeployment]]:
        """Every ModelDeployment with a usable spec: its latest body and the spec as last parsed."""
        with self._guard:
            known = list(self._known.values())
        return [(k.body, k.md) for k in known if k.md is not None and not any(p.blocking for p in k.problems)]

    def due(self, resync_seconds: float) -> list[dict[str, Any]]:
        """Bodies to reconcile again: optional APIs came or went since their last pass, or it is old."""
        with self._guard:
            known = list(self._known.values())
        now, served = time.monotonic(), self._served()
        return [k.body for k in known if now - k.reconciled_at >= resync_seconds or served != k.served]

    # --- one pass ---------------------------------------------------------------------------------

    @staticmethod
    def _parse(key: Key, body: dict[str, Any]) -> tuple[m.ModelDeployment | None, list[st.Problem]]:
        try:
            md = parse_manifest(_user_part(body), source=f"{key[0]}/{key[1]}")
        except SpecError as exc:  # e.g. the CRD in the cluster is older than this operator
            return None, [st.Problem("InvalidSpec", str(exc))]
        problems = []
        for v in md.spec.variants:
            try:
                parse_uri(v.uri)
            except UnsupportedURI as exc:
                problems.append(st.Problem("UnsupportedModelURI", f"variant {v.name}: {exc}"))
        return md, problems

    # --- applying --------------------------------------------------------------------------------

    def _apply(self, key: Key, known: Known, prune: bool, changed_only: bool = False) -> None:
        """Render and server-side apply every object; ``changed_only``: skip objects identical to
        what this operator last applied (a full pass applies all: it also repairs hand edits)."""
        md, body = known.md, known.body
        served = self._served()
        known.served = served
        rollout, experiment = _controlled(known, "rollout"), _controlled(known, "experiment")
        known.weights = desired_weights(md.spec, rollout, experiment)
        ctx = Context(namespace=key[0], uid=body["metadata"]["uid"], image=md.spec.image or self.image,
                      weights=known.weights, served=served,
                      retired=frozenset(retired_variants(md.spec, rollout, experiment)))
        route = PROVIDER_KINDS.get(md.spec.traffic.provider)
        if route is not None and route.kind not in served:
            known.problems.append(st.Problem(
                "TrafficProviderMissing",
                f"traffic.provider is {md.spec.traffic.provider} but the {route.kind} CRD ({route.group}) "
                "is not installed: traffic goes through the router only", blocking=False))
        objects = render(md, ctx)
        sent = 0
        for obj in objects:
            which = (obj["kind"], obj["metadata"]["name"])
            if changed_only and known.applied.get(which) == obj:
                continue
            known.applied.pop(which, None)  # unknown until this apply succeeds
            sent += 1
            try:
                applied = self.kube.apply(obj)
            except ApiError as exc:
                if exc.retryable:
                    raise
                # rejected (e.g. a quantity the schema let through): say so, apply the rest
                known.problems.append(st.Problem("ApplyFailed", f"{obj['kind']} {obj['metadata']['name']}: {exc.message}"))
                continue
            known.applied[which] = obj
            if obj["kind"] == DEPLOYMENT.kind:
                self._replicas[key][obj["metadata"]["name"]] = st.Replicas.of(applied)
        if prune:
            self._prune(key, known, objects, served)
            wanted = {(o["kind"], o["metadata"]["name"]) for o in objects}
            known.applied = {k: v for k, v in known.applied.items() if k in wanted}
        log.info("%s/%s: applied %d of %d objects (generation %s)", *key, sent, len(objects),
                 body["metadata"].get("generation"))

    def _prune(self, key: Key, known: Known, objects: list[dict[str, Any]], served: dict[str, str]) -> None:
        wanted = {(o["kind"], o["metadata"]["name"]) for o in objects}
        uid = known.body["metadata"]["uid"]
        for kind in OWNED_KINDS:
            version = served.get(kind.kind) if kind.optional else kind.versions[0]
            if version is None:
                continue
            for item in self.kube.list_owned(kind, version, key[0], key[1]):
                meta = item["metadata"]
                owned = any(ref.get("uid") == uid for ref in meta.get("ownerReferences") or ())
                if owned and (kind.kind, meta["name"]) not in wanted:
                    log.info("%s/%s: deleting %s %s (no longer in the spec)", *key, kind.kind, meta["name"])
                    self.kube.delete(kind, version, key[0], meta["name"])
                    self._replicas[key].pop(meta["name"], None)

    def _write_status(self, key: Key, known: Known) -> None:
        body = known.body
        previous = {**(body.get("status") or {}), **known.controlled}
        controlled_types = {c["type"] for c in known.controlled_conditions}
        if known.written or controlled_types:
            # our own conditions as we last wrote them (the body may lag), the controllers' as they
            # last said, everyone else's as observed
            theirs = [c for c in previous.get("conditions") or ()
                      if c.get("type") not in st.OWN_CONDITIONS and c.get("type") not in controlled_types]
            ours = [c for c in (known.written or {}).get("conditions", ()) if c.get("type") in st.OWN_CONDITIONS]
            previous["conditions"] = theirs + known.controlled_conditions + ours
        generation = int(body["metadata"].get("generation") or 0)
        status = st.compute(known.md, generation=generation, weights=known.weights, problems=known.problems,
                            deployments=self._replicas[key], previous=previous, now=_now())
        written = {**status, **known.controlled}
        if written == known.written:
            return
        # what is there now: the last status we wrote, over what was last observed (which may lag)
        current = {**(body.get("status") or {}), **(known.written or {})}
        # Only the fields that changed since the last write: a controller's tick that moved nothing
        # of the operator's own status costs no merge patch.
        last = known.written
        changed = status if last is None else {k: v for k, v in status.items() if k not in last or last[k] != v}
        patch = _merge_patch(current, changed)
        patch.update({k: None for k, v in known.controlled.items() if v is None and current.get(k) is not None})
        if patch:
            self.kube.patch_status(key[0], key[1], patch)
        # The controllers' states hold None values that a merge patch would turn into deletions:
        # each changed one replaces the stored value whole (a JSON patch), nulls included.
        before = known.written or {}
        replace = {k: v for k, v in known.controlled.items() if v is not None and v != before.get(k)}
        if replace:
            self.kube.patch_status_fields(key[0], key[1], replace)
        known.written = written

    # --- helpers ---------------------------------------------------------------------------------

    def _served(self) -> dict[str, str]:
        return {k.kind: v for k in OWNED_KINDS if k.optional and (v := self.kube.served_version(k))}

    def _lock(self, key: Key) -> threading.Lock:
        with self._guard:
            return self._locks[key]

    def _remember(self, key: Key, body: dict[str, Any]) -> Known:
        body["metadata"].pop("managedFields", None)  # the bulk of a body, and never read
        with self._guard:
            known = self._known.get(key)
            if known is None:
                known = self._known[key] = Known(body=body)
            known.body = body
            return known


def _controlled(known: Known, field_name: str) -> dict[str, Any] | None:
    """A controller's state (``rollout``, ``experiment``): the controller's latest, else the one stored
    in the status (a restart resumes it)."""
    if field_name in known.controlled:
        return known.controlled[field_name]
    return (known.body.get("status") or {}).get(field_name)


def _user_part(body: dict[str, Any]) -> dict[str, Any]:
    """What a user wrote: the parser checks the spec, not the status other controllers keep."""
    meta = body["metadata"]
    return {"apiVersion": body["apiVersion"], "kind": body["kind"],
            "metadata": {"name": meta["name"], "namespace": meta.get("namespace")}, "spec": body.get("spec")}


def _merge_patch(current: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """``wanted`` as a JSON merge patch over ``current``: maps merge, so keys gone from a map
    (a variant dropped from ``weights``) must be sent as null to be removed."""
    patch = dict(wanted)
    for field_name, value in wanted.items():
        old = current.get(field_name)
        if isinstance(value, dict) and isinstance(old, dict):
            patch[field_name] = {**{k: None for k in old if k not in value}, **value}
    return patch


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
