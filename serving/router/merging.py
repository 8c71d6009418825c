"""Mirrored V2 JSON requests merged into one request to the shadow, and its answer split back.

A mirrored request costs the shadow server a whole request (HTTP, JSON, validation, metrics) for one
row; its adaptive batching merges the model runs of requests that arrive together, but not that
per-request work. The shadow's answers are only compared, never returned to anyone, so the router
sends a burst of mirrored requests that have the same form (same path, same inputs apart from the
row count, same requested outputs) as one request with all their rows, and splits the answer by
rows: each mirrored request is still compared, counted and logged on its own. Measured with the
router benchmark's setup, the shadow server's CPU per mirrored request went from ~160 us (sent one
by one) to ~55 us (sent in bursts, batched by the server) to ~25-40 us (10 ms bursts merged, ~11 per
request) to ~13 us (50 ms bursts, ~60 per request) to ~5 us (200 ms bursts, ~400 per request).

What the shadow server sees is then fewer, larger requests: its per-row series (feature and
prediction distributions, rows scored) are as with one request per mirror; its request count and
request latency are per merged request. ``shadow.merge: false`` sends every request as it came.
Only plain V2 JSON ``infer`` requests merge (flat ``data`` of numbers, no parameters, no binary
extension); V1, gRPC and anything else are sent one by one.

The merge works on the JSON text: each input's numbers are cut out of the body as they were written
and joined, so the shadow sees the client's very digits, and the router never turns them into floats
and back.
"""
from __future__ import annotations

import array
import math
import re
import uuid
from typing import Any, Sequence

import orjson

from ondeck.serving.router.compare import CompareError, Predictions, from_tensors, loads_answer

# A merged request stays a modest body (~60 KB of V2 JSON for 20 features) and about half the default queue_size
# (1,000), so while a full one goes out the next can fill.
MAX_MERGED_ROWS = 512
V2_INFER_PATH = re.compile(rb"^/v2/models/[^/?]+(/versions/[^/?]+)?/infer$")
# What differs between requests of one form: a tensor's data of flat numbers (no nested list, no string, no
# object; only requests the primary answered with 200 are mirrored, so these are numbers the model accepted),
# and the request's id, which a merged request does not carry.
CUT = re.compile(rb'"data"\s*:\s*\[([^\[\]{}"]*)\]|"id"\s*:\s*"([^"\\]*)"')
MAX_FORMS = 64  # request forms remembered; clients send one or a few
_REQUEST_KEYS = frozenset({"id", "inputs", "outputs", "parameters"})
_INPUT_KEYS = frozenset({"name", "datatype", "shape", "data", "parameters"})


class Form:
    """What requests of one form share: everything but their ``data``. Worked out once per form."""

    __slots__ = ("key", "rows", "inputs", "outputs", "sizes")

    def __init__(self, key: tuple, rows: int, inputs: list[dict], outputs: Any):
        self.key = key  # forms with equal keys merge: path, inputs' names/types/row shapes, requested outputs
        self.rows = rows
        self.inputs = inputs  # name, datatype, shape (data emptied)
        self.outputs = outputs
        self.sizes = tuple(math.prod(t["shape"]) for t in inputs)  # numbers in each input's data


class Mergeable:
    """One mirrored V2 JSON request as a merge needs it (its form and its inputs' data as JSON text), or
    why it cannot merge (``key`` None)."""

    __slots__ = ("key", "rows", "form", "data")

    def __init__(self, form: Form | None = None, data: Sequence[bytes] = ()):
        self.form = form
        self.key = form.key if form is not None else None
        self.rows = form.rows if form is not None else 0
        self.data = data


CANNOT = Mergeable()
_forms: dict[tuple[bytes, bytes], Form | None] = {}
# path -> (text before the data, text after it, form) of the last one-input request without an id: a client
# sends the same form over and over, and checking the text around the numbers costs a third of finding the cut.
_last: dict[bytes, tuple[bytes, bytes, Form]] = {}
_NUMBER_BYTES = b"0123456789+-.eE, \t\r\n"


def mergeable(path: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> Mergeable:
    """What merging ``body`` needs; ``CANNOT`` for anything but a plain V2 JSON infer request of flat numbers.

    The numbers are never parsed: each input's data stays JSON text, cut out of the body (with the id),
    and what is left (the form) is read once per form and remembered.
    """
    for name, _ in headers:
        if name.lower() == b"inference-header-content-length":  # the binary extension: not JSON throughout
            return CANNOT
    last = _last.get(path)  # only paths that matched V2_INFER_PATH are there
    if last is not None and body.startswith(last[0]) and body.endswith(last[1]):
        head, tail, form = last
        text = body[len(head):len(body) - len(tail)]
        if not text.translate(None, _NUMBER_BYTES):  # numbers only, so the request is of that form
            return Mergeable(form, [text]) if _count(text) == form.sizes[0] else CANNOT
    if not V2_INFER_PATH.match(path):
        return CANNOT
    pieces, data, at = [], [], 0
    for m in CUT.finditer(body):
        group = m.lastindex
        pieces.append(body[at:m.start(group)])
        at = m.end(group)
        if group == 1:
            data.append(m.group(1))
    if not data:
        return CANNOT
    pieces.append(body[at:])
    skeleton = b"".join(pieces)
    try:
        form = _forms[(path, skeleton)]
    except KeyError:
        if len(_forms) >= MAX_FORMS:
            _forms.clear()
        form = _forms[(path, skeleton)] = _read_form(path, skeleton, len(data))
    if form is None or any(_count(text) != size for text, size in zip(data, form.sizes)):
        return CANNOT  # a number short: the shadow sees the request as it came, and answers it
    if len(pieces) == 2:  # one input, no id
        if len(_last) >= MAX_FORMS:
            _last.clear()
        _last[path] = (pieces[0], pieces[1], form)
    return Mergeable(form, data)


def _count(numbers: bytes) -> int:
    return numbers.count(b",") + 1 if numbers.strip() else 0


def _read_form(path: bytes, skeleton: bytes, cut: int) -> Form | None:
    """The form of a request whose ``cut`` data lists were emptied, or None when it cannot merge."""
    try:
        doc = orjson.loads(skeleton)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict) or not doc.keys() <= _REQUEST_KEYS or doc.get("parameters"):
        return None
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != cut:  # a "data" list outside the inputs was cut too
        return None
    rows, signature, kept = None, [], []
    for t in inputs:
        if not isinstance(t, dict) or not t.keys() <= _INPUT_KEYS or t.get("parameters") or t.get("data") != []:
            return None
        shape = t.get("shape")
        if not isinstance(shape, list) or not shape or not all(type(d) is int and d >= 0 for d in shape):
            return None
        if rows is None:
            rows = shape[0]
        elif shape[0] != rows:
            return None
        signature.append((t.get("name"), t.get("datatype"), tuple(shape[1:])))
        kept.append({"name": t.get("name"), "datatype": t.get("datatype"), "shape": shape})
    outputs = doc.get("outputs")
    if not rows or rows > MAX_MERGED_ROWS:
        return None
    return Form((path, tuple(signature), orjson.dumps(outputs)), rows, kept, outputs)


class MergedGroup:
    """Mirrored requests of one form that go to the shadow as one request, held as packed bytes.

    A mirror waits here for up to a burst (200 ms: ~500 mirrors at the router benchmark's rate) as nothing
    but its numbers' JSON text and the primary's answer, appended to buffers, so its request, headers and
    parsed parts are freed as it is offered: ~0.37 KB a waiting mirror (tracemalloc, the router benchmark's
    one-row request) where holding the request objects for the burst took ~4.8 KB, in objects that lived
    long enough to reach the garbage collector's older generations.
    """

    __slots__ = ("routes", "form", "path", "rows", "count", "primaries", "request_ids", "_data", "_answers", "_ends", "_rows")

    def __init__(self, routes: Any, form: Form, keep_request_ids: bool = False):
        self.routes = routes  # the config snapshot the mirrors were chosen under
        self.form = form
        self.path = form.key[0]
        self.rows = 0  # in all
        self.count = 0  # requests
        self.primaries: list[str] = []  # the variant that answered each request
        self.request_ids: list[str | None] | None = [] if keep_request_ids else None
        self._data = [bytearray() for _ in form.inputs]  # each input's numbers, requests joined by commas
        self._answers = bytearray()  # the primaries' answers, each followed by a comma
        self._ends = array.array("L")  # where each answer's comma is
        self._rows = array.array("L")  # each request's row count

    def add(self, part: Mergeable, primary: str, answer: bytes, request_id: str | None = None) -> None:
        """Append one request (``part`` of this group's form) and the primary's ``answer`` to it."""
        for buffer, text in zip(self._data, part.data):
            if buffer:
                buffer += b","
            buffer += text
        self._answers += answer
        self._answers += b","
        self._ends.append(len(self._answers) - 1)
        self._rows.append(part.rows)
        self.primaries.append(primary)
        if self.request_ids is not None:
            self.request_ids.append(request_id)
        self.rows += part.rows
        self.count += 1

    def request_rows(self, first: int, last: int) -> list[int]:
        """The row count of requests ``first`` .. ``last``."""
        return self._rows[first:last].tolist()

    def request(self) -> tuple[str, bytes]:
        """(id, HTTP/1.1 request bytes) of one V2 request holding every request's rows, in order."""
        form = self.form
        request_id = "ondeck-shadow-" + uuid.uuid4().hex
        inputs = []
        for t, data in zip(form.inputs, self._data):
            head = orjson.dumps({"name": t["name"], "datatype": t["datatype"], "shape": [self.rows, *t["shape"][1:]]})
            inputs.append(head[:-1] + b',"data":[' + data + b"]}")
        body = b'{"id":"%s","inputs":[%s]' % (request_id.encode(), b",".join(inputs))
        if form.outputs is not None:
            body += b',"outputs":' + orjson.dumps(form.outputs)
        body += b"}"
        head = b"POST %s HTTP/1.1\r\nhost: shadow\r\ncontent-type: application/json\r\nx-request-id: %s\r\n" \
               b"content-length: %d\r\n\r\n" % (self.path, request_id.encode(), len(body))
        return request_id, head + body

    def answers(self, first: int, last: int) -> list[Any]:
        """The primaries' answers to requests ``first`` .. ``last``, parsed (in one go), or the
        :class:`CompareError` of one that is not JSON."""
        ends = self._ends
        start = ends[first - 1] + 1 if first else 0
        try:
            docs = orjson.loads(b"[" + self._answers[start:ends[last - 1]] + b"]")
        except orjson.JSONDecodeError:
            docs = None
        if docs is None or len(docs) != last - first:  # a bad answer (or one that was not one JSON value):
            docs = []  # each on its own, so only that one fails
            for i in range(first, last):
                docs.append(loads_answer(self._answers[start:ends[i]]))
                start = ends[i] + 1
        return docs


def merged_answer(body: bytes, rows: int) -> Predictions:
    """The shadow's V2 JSON answer to a merged request of ``rows`` rows, read once for all its parts
    (:func:`compare.compare_part` then compares each request with its share)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise CompareError(f"answer is not JSON: {exc}") from None
    outputs = doc.get("outputs") if isinstance(doc, dict) else None
    if not isinstance(outputs, list):
        raise CompareError("answer has no 'outputs'")
    tensors = {}
    for o in outputs:
        if not isinstance(o, dict):
            continue
        shape, data = o.get("shape") or [], o.get("data") or []
        if not shape or shape[0] != rows or (data and isinstance(data[0], list)):
            raise CompareError(f"output {o.get('name')!r} of the merged answer has shape {shape}, not {rows} rows")
        tensors[o.get("name")] = (shape, data)
    return from_tensors(tensors)
