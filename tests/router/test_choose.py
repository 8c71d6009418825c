"""Routing decisions: exact weights, rules in order, sticky hashing, the mirror fraction."""
from __future__ import annotations

from collections import Counter

import pytest

from ondeck.serving.router.choose import RoutingTable, cookie_value
from ondeck.serving.router.config import RouterConfig


def make(weights: dict[str, int], **extra) -> RoutingTable:
    variants = [{"name": n, "weight": w, "endpoints": [{"http": f"127.0.0.1:{8000 + i}"}]}
                for i, (n, w) in enumerate(weights.items())]
    return RoutingTable(RouterConfig.from_dict({"model": "m", "variants": variants, **extra}))


@pytest.mark.parametrize("weights", [
    {"stable": 90, "canary": 10}, {"a": 33, "b": 33, "c": 34}, {"stable": 99, "canary": 1}, {"a": 1, "b": 2, "c": 97},
    {"only": 100},
])
def test_any_1000_consecutive_picks_are_within_one_point_of_the_weights(weights):
    table = make(weights)
    picks = [table.next_weighted() for _ in range(3000)]
    for start in range(0, 2001, 37):  # many overlapping windows, not just aligned ones
        counts = Counter(picks[start:start + 1000])
        for name, w in weights.items():
            assert abs(counts[name] / 1000 - w / 100) <= 0.01, (start, counts)


def test_weights_of_zero_are_never_picked():
    table = make({"stable": 100, "dark": 0})
    assert {table.next_weighted() for _ in range(500)} == {"stable"}


def rules_table() -> RoutingTable:
    return make({"stable": 90, "canary": 10, "beta": 0}, rules=[
        {"header": "x-variant", "exact": "beta", "variant": "beta"},
        {"header": "X-Beta-User", "regex": "^(yes|true)$", "variant": "canary"},
        {"header": "x-variant", "regex": ".*", "variant": "stable"},
    ])


def test_first_matching_rule_wins():
    t = rules_table()
    assert all(t.choose({"x-variant": "beta"}) == "beta" for _ in range(20))
    assert all(t.choose({"x-beta-user": "yes", "x-variant": "beta"}) == "beta" for _ in range(20))
    assert all(t.choose({"x-beta-user": "true"}) == "canary" for _ in range(20))
    assert all(t.choose({"x-variant": "other"}) == "stable" for _ in range(20))


def test_regex_and_exact_do_not_match_near_misses():
    t = rules_table()
    picks = Counter(t.choose({"x-beta-user": "yes please", "x-other": "beta"}) for _ in range(1000))
    assert picks == {"stable": 900, "canary": 100}  # fell through to the exact split


def test_sticky_header_is_stable_and_honours_weights():
    t = make({"stable": 90, "canary": 10}, sticky={"header": "x-user-id"})
    first = {f"user-{i}": t.choose({"x-user-id": f"user-{i}"}) for i in range(10_000)}
    again = make({"stable": 90, "canary": 10}, sticky={"header": "x-user-id"})  # a restart, another replica
    assert all(again.choose({"x-user-id": k}) == v for k, v in first.items())
    share = Counter(first.values())["canary"] / len(first)
    assert abs(share - 0.10) <= 0.01


def test_sticky_users_keep_the_canary_while_it_grows():
    small = make({"stable": 90, "canary": 10}, sticky={"header": "u"})
    big = make({"stable": 70, "canary": 30}, sticky={"header": "u"})
    keys = [f"k{i}" for i in range(5000)]
    assert all(big.choose({"u": k}) == "canary" for k in keys if small.choose({"u": k}) == "canary")


def test_sticky_cookie_and_missing_key_falls_back_to_the_split():
    t = make({"stable": 50, "canary": 50}, sticky={"cookie": "uid"})
    assert len({t.choose({"cookie": "theme=dark; uid=alice"}) for _ in range(50)}) == 1
    assert Counter(t.choose({"cookie": "theme=dark"}) for _ in range(100)) == {"stable": 50, "canary": 50}


def test_cookie_value():
    assert cookie_value('a=1; uid="bob"; c=3', "uid") == "bob"
    assert cookie_value("a=1", "uid") is None and cookie_value(None, "uid") is None


def test_mirror_fraction_is_exact_and_spread():
    t = make({"stable": 100, "shadow": 0}, shadow={"variant": "shadow", "fraction": 0.1})
    picks = [t.mirror("stable") for _ in range(1000)]
    assert sum(picks) == 100
    assert max(len(run) for run in "".join("x" if p else "." for p in picks).split("x")) <= 9
    assert not any(make({"stable": 100}).mirror("stable") for _ in range(100))
    assert not any(t.mirror("shadow") for _ in range(100))  # the shadow's own requests (a header rule's) are not


def test_every_variant_gets_its_share_of_mirrors_whatever_the_split():
    # A 90/10 split and a 10% shadow are both periodic with period 10: one sampler for all requests fell in
    # step with the split, and the canary's requests were never mirrored.
    t = make({"stable": 90, "canary": 10, "shadow": 0}, shadow={"variant": "shadow", "fraction": 0.1})
    served = Counter()
    mirrored = Counter()
    for _ in range(1000):
        variant = t.choose()
        served[variant] += 1
        mirrored[variant] += t.mirror(variant)
    assert served == {"stable": 900, "canary": 100}
    assert mirrored == {"stable": 90, "canary": 10}
