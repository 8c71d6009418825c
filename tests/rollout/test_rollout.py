"""The pure rollout state machine: steps, gates, analysis verdicts, abort, resume from state."""
from __future__ import annotations

import json

import pytest

from ondeck import rollout as r
from ondeck.decide import Decision

STEPS = [
    {"setWeight": 10},
    {"pause": {"duration": 60}},
    {"analysis": {"templates": [{"templateName": "default"}]}},
    {"setWeight": 50},
    {"pause": {}},
]
INTERVAL = 30


def verdicts(*actions):
    """A stand-in for ondeck.decide.CanaryAnalysis answering these actions in turn; it records the
    windows it was asked about and threads its run state through the rollout state."""
    calls = []

    def measure(step, run_state, start, end):
        calls.append((start, end))
        assert run_state == (None if len(calls) == 1 else {"n": len(calls) - 1})
        action = actions[min(len(calls) - 1, len(actions) - 1)]
        return {"n": len(calls)}, Decision(action, f"measured {action}", {"n": len(calls)})

    measure.calls = calls
    return measure


def run(state, now, **kw):
    kw.setdefault("interval_for", lambda step: INTERVAL)
    return r.tick(STEPS, state, now, **kw)


def weight_actions(actions):
    return [a["weights"] for a in actions if a["type"] == "setWeights"]


def test_good_canary_walks_every_step_and_is_promoted():
    m = verdicts("continue", "promote")
    s = r.new_state("stable", "canary", 0, stable_version="v1", canary_version="v2")
    s, a = run(s, 0, measure=m)
    assert weight_actions(a) == [{"stable": 90, "canary": 10}]
    assert s["stepIndex"] == 1 and s["phase"] == r.PROGRESSING  # pausing 60 s
    s, a = run(s, 59, measure=m)
    assert s["stepIndex"] == 1 and a == []
    s, a = run(s, 60, measure=m)  # pause over -> analysis starts; its first window is still open
    assert s["stepIndex"] == 2 and m.calls == []
    s, a = run(s, 89, measure=m)  # not due yet (interval 30)
    assert m.calls == []
    s, a = run(s, 90, measure=m)
    assert m.calls == [(60, 90)] and s["stepIndex"] == 2
    s, a = run(s, 120, measure=m)  # second measurement: the run passes, weight 50, then the gate
    assert m.calls == [(60, 90), (90, 120)]
    assert weight_actions(a) == [{"stable": 50, "canary": 50}]
    assert s["phase"] == r.PAUSED and s["stepIndex"] == 4
    s, a = run(s, 1000, measure=m)
    assert s["phase"] == r.PAUSED  # a gate without duration waits for a person, whatever the time
    s, a = run(s, 1001, measure=m, promote=True)
    assert s["phase"] == r.HEALTHY
    assert weight_actions(a) == [{"stable": 0, "canary": 100}]
    assert {"type": "promote"} in a


def test_failed_analysis_rolls_back():
    m = verdicts("rollback")
    s = r.new_state("stable", "canary", 0)
    s, _ = run(s, 0, measure=m)
    s, _ = run(s, 60, measure=m)
    s, a = run(s, 90, measure=m)
    assert s["phase"] == r.DEGRADED and s["canaryWeight"] == 0
    assert weight_actions(a) == [{"stable": 100, "canary": 0}]
    assert any(x["type"] == "abort" for x in a)
    assert "rolled back" in s["message"] and "measured rollback" in s["message"]
    assert run(s, 500, measure=m) == (s, [])  # finished stays finished


def test_inconclusive_analysis_pauses_never_promotes():
    m = verdicts("pause")
    s = r.new_state("stable", "canary", 0)
    s, _ = run(s, 0, measure=m)
    s, _ = run(s, 60, measure=m)
    s, a = run(s, 90, measure=m)
    assert s["phase"] == r.PAUSED and s["canaryWeight"] == 10 and s["stepIndex"] == 2
    for t in (100, 1000, 10_000):
        s, a = run(s, t, measure=m)
        assert s["phase"] == r.PAUSED and s["canaryWeight"] == 10
    assert len(m.calls) == 1  # a concluded run is not measured again
    assert s["message"] == "step 2: analysis inconclusive, paused: measured pause"  # not growing per tick
    # a person may still bless it past the inconclusive analysis
    s, a = run(s, 10_001, measure=m, promote=True)
    assert s["stepIndex"] == 4 and s["canaryWeight"] == 50


def test_abort_at_any_time():
    s = r.new_state("stable", "canary", 0)
    s, _ = run(s, 0, measure=verdicts("promote"))
    s, a = run(s, 5, abort=True)
    assert s["phase"] == r.DEGRADED and weight_actions(a) == [{"stable": 100, "canary": 0}]
    assert "ondeck abort" in s["message"]


def test_state_survives_a_json_round_trip_and_resumes_the_same_step():
    m = verdicts("continue", "promote")
    s = r.new_state("stable", "canary", 0)
    s, _ = run(s, 0, measure=m)
    s, _ = run(s, 60, measure=m)
    s, _ = run(s, 90, measure=m)
    restored = json.loads(json.dumps(s))  # what the operator keeps in status / ondeck run in a file
    assert restored == s
    s2, a = run(restored, 120, measure=m)
    assert s2["stepIndex"] == 4 and len(m.calls) == 2  # it went on from the analysis, not from step 0


def test_a_step_must_say_what_it_is():
    s = r.new_state("stable", "canary", 0)
    with pytest.raises(ValueError, match="none of setWeight, pause, analysis"):
        r.tick([{"bogus": 1}], s, 0)


BACKGROUND = {"analysis": {"templates": [{"templateName": "health"}]}, "startingStep": 1}


def test_background_analysis_watches_from_its_starting_step_and_rolls_back_mid_pause():
    m = verdicts("continue", "rollback")
    s = r.new_state("stable", "canary", 0, stable_version="v1", canary_version="v2")
    s, _ = run(s, 0, measure=m, background=BACKGROUND)  # weight 10, then step 1 (the 60 s pause): background starts
    assert s["stepIndex"] == 1 and m.calls == []
    s, a = run(s, 30, measure=m, background=BACKGROUND)  # measured while the pause step runs: no verdict yet
    assert m.calls == [(0, 30)] and s["phase"] == r.PROGRESSING and s["stepIndex"] == 1
    assert [e["reason"] for e in a if e["type"] == "event"] == ["BackgroundAnalysisMeasured"]
    s, a = run(s, 59, measure=m, background=BACKGROUND)  # not due
    assert len(m.calls) == 1
    s, a = run(s, 60, measure=m, background=BACKGROUND)  # failed: rolled back before the pause could end
    assert s["phase"] == r.DEGRADED and s["canaryWeight"] == 0 and s["stepIndex"] == 1
    assert [x["type"] for x in a if x["type"] != "event"] == ["setWeights", "abort"]
    assert "background analysis: measured rollback" in s["message"]


def test_background_analysis_does_not_start_before_its_step():
    s = r.new_state("stable", "canary", 0)
    later = {**BACKGROUND, "startingStep": 3}
    m = verdicts("continue")
    for now in (0, 30, 60, 90):  # steps 0-2: the weight, the pause, then the step analysis (still measuring)
        s, _ = run(s, now, measure=m, background=later)
    assert "background" not in s and s["stepIndex"] == 2 and m.calls == [(60, 90)]  # the step's window only


def test_inconclusive_background_pauses_until_promoted_then_a_new_run_starts():
    answers, runs_seen = ["pause", "promote"], []

    def m(step, run_state, start, end):  # each background run starts with no run state of its own
        runs_seen.append(run_state)
        m.calls.append((start, end))
        action = answers[min(len(m.calls) - 1, len(answers) - 1)]
        return {"n": 1}, Decision(action, f"measured {action}", {})
    m.calls = []
    s = r.new_state("stable", "canary", 0)
    s, _ = run(s, 0, measure=m, background={**BACKGROUND, "startingStep": 0})
    s, _ = run(s, 30, measure=m, background={**BACKGROUND, "startingStep": 0})
    assert s["phase"] == r.PAUSED and "background analysis inconclusive" in s["message"]
    assert not r.background_measures(s, True)  # it waits for a person now, not for time
    s, _ = run(s, 45, measure=m, background={**BACKGROUND, "startingStep": 0})  # still paused without a person
    assert s["phase"] == r.PAUSED and len(m.calls) == 1
    s, a = run(s, 50, measure=m, background={**BACKGROUND, "startingStep": 0}, promote=True)
    assert s["phase"] == r.PROGRESSING and s["background"]["runs"] == 1 and s["background"]["verdict"] is None
    assert s["background"]["previous"]["verdict"] == r.INCONCLUSIVE and s["stepIndex"] == 1  # the pause step
    s, _ = run(s, 80, measure=m, background={**BACKGROUND, "startingStep": 0})  # the new run passes: another starts
    assert s["background"]["runs"] == 2 and s["background"]["previous"]["verdict"] == r.SUCCESSFUL
    assert r.background_measures(s, True) and runs_seen == [None, None]
