"""Mirrored V2 JSON requests merged for the shadow, and its answer split back, row for row."""
from __future__ import annotations

import asyncio
import weakref
from types import SimpleNamespace

import orjson
import pytest

from ondeck.serving.router.compare import CompareError, Predictions, compare_merged, compare_part, from_json
from ondeck.serving.router.merging import MAX_MERGED_ROWS, MergedGroup, merged_answer, mergeable
from ondeck.serving.router.shadow import MIRRORS_PER_TURN, ShadowMirror

PATH = b"/v2/models/churn/infer"


def merged_request(*parts, answers=None) -> tuple[str, bytes]:
    group = MergedGroup(None, parts[0].form)
    for i, part in enumerate(parts):
        group.add(part, "stable", answers[i] if answers else b"{}")
    return group.request()


def parsed(*answers: bytes) -> list:
    """The primaries' answers as a merged group reads them back, for comparing."""
    one_row = mergeable(PATH, [], body([[1.0, 2.0]]))
    group = MergedGroup(None, one_row.form)
    for answer in answers:
        group.add(one_row, "stable", answer)
    return group.answers(0, len(answers))


def body(rows: list[list[float]], **extra) -> bytes:
    flat = [x for r in rows for x in r]
    return orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [len(rows), len(rows[0])],
                                     "data": flat}], **extra})


def test_requests_of_one_form_merge_and_their_rows_come_back_to_each():
    a, b = mergeable(PATH, [], body([[1.0, 2.0]], id="a")), mergeable(PATH, [], body([[3.0, 4.0], [5.0, 6.0]]))
    assert a.key is not None and a.key == b.key and (a.rows, b.rows) == (1, 2)

    request_id, data = merged_request(a, b)
    head, _, sent = data.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v2/models/churn/infer HTTP/1.1\r\n") and b"content-length: %d" % len(sent) in head
    doc = orjson.loads(sent)
    assert doc["id"] == request_id
    assert doc["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [3, 2], "data": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]}]

    # the shadow's answer to the 3 rows: each part gets its own rows back, in order
    answer = orjson.dumps({"id": request_id, "outputs": [
        {"name": "label", "datatype": "INT64", "shape": [3], "data": [0, 1, 1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [3, 2], "data": [0.9, 0.1, 0.2, 0.8, 0.3, 0.7]}]})
    merged = merged_answer(answer, 3)
    first, second = merged.part(0, 1), merged.part(1, 2)
    assert first.classes == (0,) and first.scores == (pytest.approx(0.1),)
    assert second.classes == (1, 1) and second.scores == (pytest.approx(0.8), pytest.approx(0.7))
    # each request is compared with its own rows of the merged answer
    assert compare_part(Predictions((1, 1), (0.8, 0.5)), merged, 1, 2) == (True, pytest.approx(0.1))
    assert compare_part(Predictions((1,), (0.1,)), merged, 0, 1) == (False, pytest.approx(0.0))
    with pytest.raises(CompareError, match="shadow 1 for that request"):
        compare_part(Predictions((1, 1), (0.8, 0.7)), merged, 2, 2)  # more rows than the merged answer has left
    with pytest.raises(CompareError, match="primary answered 1 rows, shadow 2"):
        compare_part(Predictions((1,), (0.8,)), merged, 1, 2)  # the primary answered fewer rows than it was sent


def test_only_plain_v2_json_infer_requests_merge():
    row = [[1.0, 2.0]]
    assert mergeable(b"/v1/models/churn:predict", [], b'{"instances": [[1, 2]]}').key is None
    assert mergeable(PATH, [(b"Inference-Header-Content-Length", b"90")], body(row)).key is None  # binary extension
    assert mergeable(PATH, [], b"not json").key is None
    assert mergeable(PATH, [], body(row, parameters={"x": 1})).key is None
    nested = orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 2], "data": [[1.0, 2.0]]}]})
    assert mergeable(PATH, [], nested).key is None
    short = orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 2], "data": [1.0, 2.0]}]})
    assert mergeable(PATH, [], short).key is None  # the shadow must see (and refuse) that one as it came
    assert mergeable(PATH, [], body([[1.0, 2.0]] * (MAX_MERGED_ROWS + 1))).key is None
    # a versioned path merges, but not with the unversioned one; nor do different row widths or outputs
    versioned = mergeable(b"/v2/models/churn/versions/2/infer", [], body(row))
    assert versioned.key is not None and versioned.key != mergeable(PATH, [], body(row)).key
    assert mergeable(PATH, [], body([[1.0, 2.0, 3.0]])).key != mergeable(PATH, [], body(row)).key
    assert mergeable(PATH, [], body(row, outputs=[{"name": "label"}])).key != mergeable(PATH, [], body(row)).key


def test_an_answer_that_does_not_line_up_is_a_compare_error():
    with pytest.raises(CompareError, match="not 3 rows"):
        merged_answer(orjson.dumps({"outputs": [{"name": "label", "shape": [2], "data": [0, 1]}]}), 3)
    with pytest.raises(CompareError, match="not JSON"):
        merged_answer(b"<html>", 1)


def test_a_full_merged_request_of_mirrors_goes_without_waiting_for_the_burst_window():
    shadow = SimpleNamespace(queue_size=10_000, concurrency=4, burst_seconds=60.0, merge=True)
    routes = SimpleNamespace(config=SimpleNamespace(shadow=shadow))
    two_rows = mergeable(PATH, [], body([[1.0, 2.0], [3.0, 4.0]]))

    async def offer(n: int, job) -> int:
        mirror, sent = ShadowMirror(metrics=None), []
        mirror._send_burst = lambda: sent.append(mirror._queued)  # what a burst would take
        for _ in range(n):
            mirror.offer(routes, "stable", job)
        await asyncio.sleep(0)  # one turn of the loop: a burst due "now" has run, a 60 s window has not
        return sum(sent)

    unmergeable = SimpleNamespace()  # e.g. a gRPC request: waits as it is
    assert asyncio.run(offer(MAX_MERGED_ROWS - 1, unmergeable)) == 0  # fewer wait: they wait for the window
    assert asyncio.run(offer(MAX_MERGED_ROWS, unmergeable)) == MAX_MERGED_ROWS  # a full request's worth goes at once
    packed = SimpleNamespace(mergeable=lambda: two_rows, primary_body=b"{}", request_id=None)
    assert asyncio.run(offer(MAX_MERGED_ROWS // 2 - 1, packed)) == 0
    assert asyncio.run(offer(MAX_MERGED_ROWS // 2, packed)) == MAX_MERGED_ROWS // 2  # counted in rows when merged


def test_mirrors_wait_packed_by_form_without_their_requests_then_go_one_merged_request_a_form():
    shadow = SimpleNamespace(queue_size=10_000, concurrency=4, burst_seconds=60.0, merge=True)
    routes = SimpleNamespace(config=SimpleNamespace(shadow=shadow))

    class Job:  # what the REST front-end offers: the request, and the primary's answer
        def __init__(self, payload: bytes, answer: bytes):
            self.payload, self.primary_body, self.request_id = payload, answer, None

        def mergeable(self):
            return mergeable(PATH, [], self.payload)

    async def burst() -> tuple[list, list, bool]:
        mirror, merged, alone = ShadowMirror(metrics=None), [], []
        mirror._start_merged = merged.append
        mirror._start = lambda routes, primary, job: alone.append(job)
        kept = []
        for i in range(100):
            job = Job(body([[float(i), 1.0]]) if i % 10 else body([[float(i), 1.0, 2.0]]), b'{"n":%d}' % i)
            kept.append(weakref.ref(job))
            mirror.offer(routes, "canary" if i % 3 == 0 else "stable", job)
            del job
        mirror.offer(routes, "stable", SimpleNamespace(protocol="grpc"))
        gone = all(ref() is None for ref in kept)  # nothing of a merged request is held but its text
        mirror._send_burst()
        return merged, alone, gone

    merged, alone, gone = asyncio.run(burst())
    assert gone and len(alone) == 1 and alone[0].protocol == "grpc"
    two, three = sorted(merged, key=lambda g: g.count, reverse=True)  # one request per form (two or three numbers)
    assert (two.count, three.count) == (90, 10)
    sent = orjson.loads(two.request()[1].partition(b"\r\n\r\n")[2])["inputs"][0]
    assert sent["shape"] == [90, 2] and sent["data"][::2] == [float(i) for i in range(100) if i % 10]
    assert two.primaries == ["canary" if i % 3 == 0 else "stable" for i in range(100) if i % 10]
    assert [doc["n"] for doc in two.answers(0, 90)] == [i for i in range(100) if i % 10]
    assert [doc["n"] for doc in three.answers(3, 5)] == [30, 40]


def test_the_merged_request_carries_the_clients_numbers_as_they_were_written():
    # Only the data is cut out: the shadow sees the very digits each client sent, not a float's round trip.
    spaced = b'{"id": "req-1", "inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 3], "data": [1e-3, 12.50, 7]}]}'
    compact = b'{"id":"req-2","inputs":[{"name":"input","datatype":"FP64","shape":[1,3],"data":[0.1,2,3]}]}'
    a, b = mergeable(PATH, [], spaced), mergeable(PATH, [], compact)
    assert a.key is not None and a.key == b.key  # the same form, whatever the ids and the spacing
    _, data = merged_request(a, b)
    sent = data.partition(b"\r\n\r\n")[2]
    assert b'"data":[1e-3, 12.50, 7,0.1,2,3]' in sent
    assert orjson.loads(sent)["inputs"][0]["shape"] == [2, 3]


def test_data_outside_the_inputs_or_not_plain_numbers_does_not_merge():
    strings = orjson.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1, 1], "data": ["a,b"]}]})
    assert mergeable(PATH, [], strings).key is None
    stray = b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}], "data": [3]}'
    assert mergeable(PATH, [], stray).key is None  # a key the form check refuses: cutting its data must not hide it
    empty = b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 1], "data": [ ]}]}'
    assert mergeable(PATH, [], empty).key is None  # a count of one number would pass for it without the check


def test_each_primary_answer_of_a_burst_is_compared_with_its_own_rows():
    def answer(labels: list[int], probabilities: list[float], k: int = 2) -> bytes:
        return orjson.dumps({"id": "x", "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [len(labels)], "data": labels},
            {"name": "probabilities", "datatype": "FP32", "shape": [len(labels), k], "data": probabilities}]})

    merged = merged_answer(answer([0, 1, 1, 0], [0.9, 0.1, 0.2, 0.8, 0.4, 0.6, 0.7, 0.3]), 4)
    primaries = [answer([0], [0.8, 0.2]), answer([1, 0], [0.2, 0.8, 0.6, 0.4]), b"<html>", answer([1], [0.4, 0.6])]
    pairs = compare_merged(parsed(*primaries), [1, 2, 1, 1], Predictions(merged.classes + (0,), merged.scores + (0.3,)))
    assert pairs[0] == (True, pytest.approx(0.1))
    assert pairs[1] == (False, pytest.approx(0.1))  # row 2 disagrees; mean of |0.8-0.8| and |0.4-0.6|
    assert isinstance(pairs[2], CompareError) and "not JSON" in str(pairs[2])  # only the bad answer fails
    assert pairs[3] == (False, pytest.approx(0.3))
    # the same pairs as comparing each answer on its own, through the general path (three classes here)
    three = answer([2], [0.1, 0.2, 0.7], k=3)
    shadow3 = merged_answer(answer([2, 1], [0.1, 0.2, 0.7, 0.1, 0.8, 0.1], k=3), 2)
    assert compare_merged(parsed(three, three), [1, 1], shadow3) == [
        compare_part(from_json(three), shadow3, 0, 1), compare_part(from_json(three), shadow3, 1, 1)]
    assert compare_merged(parsed(three), [2], shadow3)[0].args[0].startswith("primary answered 1 rows")


def test_a_large_merged_group_is_compared_a_slice_per_loop_turn_each_request_with_its_own_rows():
    # 100 requests of one or two rows: request i's shadow rows agree for even i, and differ in score by i / 1000.
    rows = [1 + i % 2 for i in range(100)]
    classes, scores, primaries = [], [], []
    for i, n in enumerate(rows):
        p = 0.2 + (i % 5) / 10
        primaries.append(orjson.dumps({"outputs": [
            {"name": "label", "datatype": "INT64", "shape": [n], "data": [1] * n},
            {"name": "probabilities", "datatype": "FP32", "shape": [n, 2], "data": [1 - p, p] * n}]}))
        classes += [1 if i % 2 == 0 else 0] * n
        scores += [p + i / 1000] * n
    compared, outcomes = [], []
    metrics = SimpleNamespace(compared=lambda primary, shadow, pairs: compared.extend(pairs),
                              shadow=lambda primary, shadow, outcome: outcomes.append(outcome))
    routes = SimpleNamespace(config=SimpleNamespace(shadow=SimpleNamespace(variant="candidate")))
    parts = {n: mergeable(PATH, [], body([[1.0, 2.0]] * n)) for n in (1, 2)}
    group = MergedGroup(routes, parts[1].form)
    for n, answer in zip(rows, primaries):
        group.add(parts[n], "stable", answer)

    async def compare() -> int:
        mirror = ShadowMirror(metrics)
        mirror._active = 1  # the merged request's slot, freed once every request is counted
        mirror._compare_slice(group, Predictions(tuple(classes), tuple(scores)), 0, 0)
        first = len(compared)  # the rest waits for the loop: the router's clients go between slices
        for _ in range(10):
            await asyncio.sleep(0)
        assert mirror._active == 0
        return first

    assert asyncio.run(compare()) == MIRRORS_PER_TURN < len(rows)
    assert outcomes == []
    assert [pair.agree for pair in compared] == [i % 2 == 0 for i in range(100)]
    assert [pair.abs_diff for pair in compared] == [pytest.approx(i / 1000, abs=1e-9) for i in range(100)]


def test_a_request_like_the_last_one_but_for_its_numbers_is_checked_as_closely():
    first = b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}'
    assert mergeable(PATH, [], first).key is not None  # remembered: the next ones of this form go the short way
    again = mergeable(PATH, [], first.replace(b"[1, 2]}", b"[3.5, -4e-2]}"))
    assert again.key == mergeable(PATH, [], first).key and again.data == [b"3.5, -4e-2"]
    assert mergeable(PATH, [], first.replace(b"[1, 2]}", b"[3]}")).key is None  # a number short
    # the same text before and after the numbers, but what lies between is not numbers: read in full, and refused
    sneaky = first.replace(b"[1, 2]}", b'[1, 2], "parameters": {"a": [3]}')
    assert sneaky.endswith(b"]}]}") and mergeable(PATH, [], sneaky).key is None
