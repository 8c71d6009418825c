"""Which ModelDeployments the controllers' loop ticks: changed ones, and those with work due."""
from __future__ import annotations

import copy

import pytest

from ondeck.operator.scheduling import RETRY_SECONDS, TickSchedule
from ondeck.spec import parse_manifest

VARIANTS = [{"name": "stable", "version": "v1", "uri": "file:///models/churn/v1"},
            {"name": "canary", "version": "v2", "uri": "file:///models/churn/v2"}]
CANARY = {"canary": {"canaryVariant": "canary", "steps": [{"setWeight": 10}, {"pause": {}}]}}


def body(spec_extra=None, status=None, annotations=None, generation=1):
    return {"apiVersion": "ondeck.io/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "churn", "namespace": "ns", "generation": generation, "annotations": annotations or {}},
            "spec": {"variants": VARIANTS, **(spec_extra or {})}, "status": status or {}}


def parsed(b):
    user = {k: v for k, v in copy.deepcopy(b).items() if k != "status"}
    return parse_manifest(user)


def ticked(schedule, b, at):
    schedule.ticked(b, at)
    return schedule


def test_an_object_is_ticked_first_and_again_only_when_it_changes():
    paused = body({"strategy": CANARY}, {"rollout": {"phase": "Paused"}, "monitoring": None})
    schedule = TickSchedule()
    assert schedule.due(paused, parsed(paused), 0.0)
    ticked(schedule, paused, 0.0)
    assert not schedule.due(paused, parsed(paused), 10_000.0)  # waits for a person, nothing to monitor
    promoted = copy.deepcopy(paused)
    promoted["metadata"]["annotations"]["ondeck.io/promote"] = "2026-12-06T12:00:00Z"
    assert schedule.due(promoted, parsed(promoted), 1.0)
    edited = body({"strategy": CANARY}, paused["status"], generation=2)
    assert schedule.due(edited, parsed(edited), 1.0)
    schedule.forget("ns", "churn")
    assert schedule.due(paused, parsed(paused), 1.0)


@pytest.mark.parametrize("phase, due", [("Progressing", True), ("Paused", False), ("Healthy", False), ("Degraded", False)])
def test_a_canary_is_ticked_every_round_while_it_progresses(phase, due):
    b = body({"strategy": CANARY}, {"rollout": {"phase": phase}, "monitoring": None})
    schedule = ticked(TickSchedule(), b, 0.0)
    assert schedule.due(b, parsed(b), 0.1) is due


@pytest.mark.parametrize("strategy", [{"abTest": {}}, {"shadow": {"variant": "canary"}}])
@pytest.mark.parametrize("phase, due", [(None, True), ("Progressing", True), ("Healthy", False)])
def test_ab_tests_and_shadows_are_ticked_every_round_until_concluded(strategy, phase, due):
    b = body({"strategy": strategy}, {"monitoring": None, "experiment": {"phase": phase} if phase else None})
    schedule = ticked(TickSchedule(), b, 0.0)
    assert schedule.due(b, parsed(b), 0.1) is due


def test_monitoring_is_ticked_when_its_next_look_is_due():
    b = body({"monitoring": {"drift": {"interval": "2m"}}}, {"monitoring": {"lastLook": 100.0, "error": None}})
    schedule = ticked(TickSchedule(), b, 100.0)
    assert not schedule.due(b, parsed(b), 219.0)
    assert schedule.due(b, parsed(b), 220.0)


def test_a_pending_webhook_attempt_makes_it_due_earlier():
    b = body({"monitoring": {"drift": {"interval": "5m"}}},
             {"monitoring": {"lastLook": 100.0, "pendingRetrain": {"nextAttemptAt": 108.0}}})
    schedule = ticked(TickSchedule(), b, 100.0)
    assert not schedule.due(b, parsed(b), 107.0)
    assert schedule.due(b, parsed(b), 108.0)


def test_monitoring_that_cannot_look_is_retried_not_ticked_every_round():
    b = body({}, {"monitoring": {"lastLook": 100.0, "error": "no look taken: Prometheus is down"}})
    schedule = ticked(TickSchedule(), b, 500.0)
    assert not schedule.due(b, parsed(b), 500.0 + RETRY_SECONDS - 1)
    assert schedule.due(b, parsed(b), 500.0 + RETRY_SECONDS)


def test_nothing_to_monitor_and_no_strategy_is_never_due_again():
    b = body({}, {"monitoring": None})
    schedule = ticked(TickSchedule(), b, 0.0)
    assert not schedule.due(b, parsed(b), 1e9)
