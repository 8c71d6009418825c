"""kopf wiring: which events call which :class:`~ondeck.operator.reconcile.Reconciler` method.

- a ModelDeployment is created, updated or found at start-up (resume): one reconcile pass
  (pruning objects the spec no longer wants on updates and resyncs);
- any ModelDeployment event: remember its latest body (status merges); deletion: forget it.
  Deleting needs no handler: every object carries an ownerReference, and the garbage collector
  removes them, so kopf adds no finalizer and a stuck operator never blocks a delete;
- an owned Deployment changes: note its readiness (its owner's status is rewritten at the next
  flush, every ``FLUSH_SECONDS``); deleted by hand: put back;
- every ``poll_seconds``: reconcile what is due (optional CRDs installed or removed, periodic resync);
- every ``tick_seconds``: the rollout and drift controllers
  (:class:`~ondeck.operator.controllers.Controllers`), when the operator runs them, for each
  ModelDeployment that changed or has work due (:mod:`~ondeck.operator.scheduling`: one loop, not a
  kopf timer per object, which with hundreds of objects crowded out the reconciler).

Handlers are registered on a registry of their own so that options (intervals) are plain arguments.
"""
from __future__ import annotations

import asyncio
import copy
import logging
import time
from concurrent.futures import Executor
from typing import Any

import kopf

from ondeck.operator.controllers import Controllers
from ondeck.operator.kube import DEPLOYMENT, FIELD_MANAGER, MODELDEPLOYMENT
from ondeck.operator.reconcile import Reconciler, Retry
from ondeck.operator.scheduling import TickSchedule

log = logging.getLogger("ondeck.operator")
MD = (MODELDEPLOYMENT.group, MODELDEPLOYMENT.versions[0], MODELDEPLOYMENT.plural)
DEPLOYMENTS = (DEPLOYMENT.group, DEPLOYMENT.versions[0], DEPLOYMENT.plural)
OWNED = f"app.kubernetes.io/managed-by={FIELD_MANAGER}"
FLUSH_SECONDS = 0.5


def register(reconciler: Reconciler, *, workers: int, resync_seconds: float, poll_seconds: float,
             controllers: Controllers | None = None, tick_seconds: float = 5.0) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    schedule = TickSchedule()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(**reconciler.kube.credentials())

    @kopf.on.startup(registry=registry)
    async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        # Progress in annotations, not status: the CRD's structural schema would prune status.kopf.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=MODELDEPLOYMENT.group)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=MODELDEPLOYMENT.group, key="last-handled-configuration")
        settings.posting.level = logging.WARNING  # our warnings, not a "handler succeeded" per object
        settings.posting.reporting_component = FIELD_MANAGER
        settings.watching.label_selectors[DEPLOYMENTS] = OWNED  # watch only the Deployments we own
        settings.scanning.disabled = True  # no CRD/namespace scanning: needs no RBAC for them
        settings.execution.max_workers = workers
        pool = settings.execution.executor  # the handlers' threads: one limit for all the operator's work
        memo.loops = [asyncio.create_task(_every(poll_seconds, "resync", lambda: _resync(reconciler, pool, resync_seconds))),
                      asyncio.create_task(_every(FLUSH_SECONDS, "status flush", lambda: _flush(reconciler, pool)))]
        if controllers is not None:
            # At most a quarter of the threads tick: with many objects at once (a start-up, a bulk
            # apply), serving them (the reconcile passes) comes before moving their rollouts.
            ticking = asyncio.Semaphore(max(1, workers // 4))
            memo.loops.append(asyncio.create_task(_every(
                tick_seconds, "controllers", lambda: _tick(reconciler, controllers, schedule, pool, ticking))))

    @kopf.on.cleanup(registry=registry)
    async def stop(memo: kopf.Memo, settings: kopf.OperatorSettings, **_: Any) -> None:
        for task in getattr(memo, "loops", ()):
            task.cancel()
        # Queued passes are dropped, not run: the next start resumes every object anyway.
        settings.execution.executor.shutdown(wait=False, cancel_futures=True)

    def reconcile(body: kopf.Body, prune: bool) -> None:
        try:
            new_problems = reconciler.reconcile(_plain(body), prune=prune)
        except Retry as exc:
            raise kopf.TemporaryError(str(exc), delay=5) from None
        for problem in new_problems:
            kopf.warn(body, reason=problem.reason, message=problem.message)

    @kopf.on.create(*MD, registry=registry)
    def created(body: kopf.Body, **_: Any) -> None:
        reconcile(body, prune=False)  # nothing of it exists yet

    @kopf.on.update(*MD, registry=registry)
    def changed(body: kopf.Body, **_: Any) -> None:
        reconcile(body, prune=True)

    @kopf.on.resume(*MD, registry=registry)
    def resumed(body: kopf.Body, **_: Any) -> None:
        # Spec changes made while the operator was down arrive as updates (kopf compares with the
        # last handled spec); leftovers from anything else go at the next resync. So a restart
        # with many objects costs one apply per object, no listing.
        reconcile(body, prune=False)

    @kopf.on.event(*MD, registry=registry)
    def md_event(type: str | None, body: kopf.Body, namespace: str, name: str, **_: Any) -> None:
        if type == "DELETED":
            reconciler.forget(namespace, name)
            if controllers is not None:
                controllers.forget(namespace, name)
                schedule.forget(namespace, name)
        else:
            reconciler.observed(_plain(body))

    @kopf.on.event(*DEPLOYMENTS, labels={"app.kubernetes.io/managed-by": FIELD_MANAGER}, registry=registry)
    def deployment_event(type: str | None, body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> None:
        instance = labels.get("app.kubernetes.io/instance")
        if not instance:
            return
        if reconciler.deployment_changed(namespace, instance, _plain(body), deleted=type == "DELETED"):
            owner = reconciler.body(namespace, instance)
            if owner is not None:
                log.info("%s/%s: Deployment %s was deleted; putting it back", namespace, instance, body["metadata"]["name"])
                reconciler.reconcile(owner, prune=False)

    return registry


async def _every(seconds: float, what: str, step) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - one failed round must not end the loop; the next one retries
            log.exception("%s failed", what)


async def _resync(reconciler: Reconciler, pool: Executor, resync_seconds: float) -> None:
    loop = asyncio.get_running_loop()
    for body in await loop.run_in_executor(pool, reconciler.due, resync_seconds):
        try:
            await loop.run_in_executor(pool, reconciler.reconcile, body)
        except Retry as exc:  # the next round tries again
            log.warning("%s/%s: %s", body["metadata"]["namespace"], body["metadata"]["name"], exc)


async def _tick(reconciler: Reconciler, controllers: Controllers, schedule: TickSchedule, pool: Executor,
                ticking: asyncio.Semaphore) -> None:
    """One round of the controllers over the ModelDeployments that changed or have work due."""
    loop, now = asyncio.get_running_loop(), time.time()

    async def tick(body: dict[str, Any]) -> None:
        meta = body["metadata"]
        try:
            async with ticking:
                await loop.run_in_executor(pool, controllers.tick, body)
        except Retry as exc:  # not marked as ticked: the next round tries again
            log.warning("%s/%s: controllers: %s", meta["namespace"], meta["name"], exc)
        except Exception:  # noqa: BLE001 - one object's failure must not stop the others' round
            log.exception("%s/%s: controllers failed", meta["namespace"], meta["name"])
        else:
            schedule.ticked(body, now)

    await asyncio.gather(*(tick(body) for body, md in reconciler.usable() if schedule.due(body, md, now)))


async def _flush(reconciler: Reconciler, pool: Executor) -> None:
    loop = asyncio.get_running_loop()
    await asyncio.gather(*(loop.run_in_executor(pool, reconciler.flush, key) for key in reconciler.stale()))


def _plain(body: kopf.Body) -> dict[str, Any]:
    """A private copy: the reconciler keeps bodies between events."""
    return copy.deepcopy(dict(body))
