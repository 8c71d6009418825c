"""The drift and quality controller core: conditions, retrain episodes, delivery bookkeeping."""
from __future__ import annotations

import json

import numpy as np

from ondeck import monitor
from ondeck.decide import DriftPolicy, StalenessPolicy
from ondeck.monitor import Monitor, MonitorSpec
from tests.decide import streams

INTERVAL = 60.0


def spec(**kw) -> MonitorSpec:
    kw.setdefault("drift", DriftPolicy(interval=INTERVAL, recovery=600))
    kw.setdefault("retrain", True)
    return MonitorSpec(model="churn", version="v1", **kw)


def look(mon, state, rng, t, shift=0.0, rows=600, accuracy=None):
    window = streams.window(rng, t - INTERVAL, rows, x=streams.shifted_shares(shift), interval=INTERVAL)
    return mon.tick(state, t, window, accuracy)


def play(mon, shifts, seed=0, state=None, t0=0.0):
    """Looks every INTERVAL with these shifts of x; returns the final state and every action."""
    rng = np.random.default_rng(seed)
    actions = []
    for i, shift in enumerate(shifts):
        state, _, acts = look(mon, state, rng, t0 + (i + 1) * INTERVAL, shift)
        actions += acts
    return state, actions


def types(actions):
    return [a["type"] for a in actions]


def test_no_drift_no_actions_and_nothing_pending():
    mon = Monitor(spec(), streams.reference())
    state, actions = play(mon, [0.0] * 40)
    assert actions == []
    assert state["drifting"] == [] and state["pendingRetrain"] is None and state["episode"]["count"] == 0
    assert set(state["columns"]) == {"x", "level", "prediction.score"}


def test_one_retrain_per_episode_while_drift_goes_on():
    mon = Monitor(spec(), streams.reference())
    state, actions = play(mon, [0.0] * 5 + [1.0] * 20)
    assert types(actions) == ["driftDetected", "retrain"]
    detected, retrain = actions
    assert detected["features"] == ["x"] and detected["evidence"]["columns"]["x"]["effect"] > 0.3
    assert retrain["id"] == "churn-v1-1" and retrain["payload"]["model"] == "churn"
    assert "drift in x" in retrain["payload"]["reason"]
    assert state["pendingRetrain"]["id"] == "churn-v1-1" and state["episode"]["active"]


def test_a_new_episode_only_after_the_condition_clears():
    mon = Monitor(spec(), streams.reference())
    state, first = play(mon, [1.0] * 5)
    state = monitor.delivered(state, "churn-v1-1", now=400)
    # recovery is 600 s without an alarm: 15 quiet looks clear it
    state, quiet = play(mon, [0.0] * 15, seed=1, state=state, t0=300)
    assert types(quiet) == ["driftCleared"] and not state["episode"]["active"]
    state, again = play(mon, [1.0] * 5, seed=2, state=state, t0=1200)
    assert types(again) == ["driftDetected", "retrain"]
    assert again[1]["id"] == "churn-v1-2" and state["pendingRetrain"]["id"] == "churn-v1-2"
    assert [d["id"] for d in state["delivered"]] == ["churn-v1-1"]


def test_delivery_is_retried_with_backoff_until_acknowledged():
    mon = Monitor(spec(), streams.reference())
    state, _ = play(mon, [1.0] * 3)
    now = 3 * INTERVAL
    assert monitor.due_retrain(state, now)["id"] == "churn-v1-1"
    state = monitor.delivery_failed(state, "churn-v1-1", now, "connection refused")
    assert monitor.due_retrain(state, now + 1) is None  # backing off
    assert monitor.due_retrain(state, now + 2)["attempts"] == 1
    state = monitor.delivery_failed(state, "churn-v1-1", now + 2, "HTTP 503")
    assert monitor.due_retrain(state, now + 5) is None and monitor.due_retrain(state, now + 6) is not None
    state = monitor.delivered(state, "churn-v1-1", now + 6)
    assert monitor.due_retrain(state, now + 1000) is None
    assert state["delivered"] == [{"id": "churn-v1-1", "at": now + 6, "attempts": 3}]
    # an acknowledgement for another id changes nothing
    assert monitor.delivered(state, "churn-v1-9", now + 7) == state


def test_state_is_json_and_resumes_the_same_episode():
    mon = Monitor(spec(), streams.reference())
    state, actions = play(mon, [1.0] * 3)
    restored = json.loads(json.dumps(state))
    state2, more = play(Monitor(spec(), streams.reference()), [1.0] * 3, seed=3, state=restored, t0=180)
    assert types(actions) == ["driftDetected", "retrain"] and more == []  # the episode goes on after a restart


def test_another_version_starts_over():
    mon = Monitor(spec(), streams.reference())
    state, _ = play(mon, [1.0] * 3)
    promoted = Monitor(MonitorSpec(model="churn", version="v2", drift=DriftPolicy(interval=INTERVAL)), streams.reference())
    state, _, actions = look(promoted, state, np.random.default_rng(4), 240)
    assert state["version"] == "v2" and state["episode"]["count"] == 0 and state["pendingRetrain"] is None


def test_accuracy_below_the_bar_is_an_episode_without_drift():
    mon = Monitor(spec(drift=None, feedback=True, staleness=StalenessPolicy(bar=0.8)), streams.reference())
    state, actions = None, []
    for i in range(6):
        state, decisions, acts = mon.tick(state, 60.0 * i, None, {"time": 60.0 * i, "total": 200, "correct": 140})
        actions += acts
    assert types(actions) == ["retrain"]
    assert "below the bar" in actions[0]["payload"]["reason"]
    assert state["liveAccuracy"] == 0.7 and state["staleness"]["secondsToBar"] == 0


def test_without_a_webhook_episodes_are_counted_and_nothing_is_sent():
    mon = Monitor(spec(retrain=False), streams.reference())
    state, actions = play(mon, [1.0] * 3)
    assert types(actions) == ["driftDetected"] and state["episode"]["count"] == 1
    assert monitor.due_retrain(state, 1e9) is None


def test_a_model_older_than_the_horizon_asks_once():
    mon = Monitor(spec(drift=None, max_age=86400.0, created=0.0), streams.reference())
    state, _, young = mon.tick(None, 3600.0)
    state, _, old = mon.tick(state, 90000.0)
    state, _, older = mon.tick(state, 180000.0)
    assert young == [] and types(old) == ["retrain"] and older == []
    assert "days old" in old[0]["payload"]["reason"]
