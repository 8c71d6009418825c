"""Adaptive batching: concurrent requests merge into one model run and each gets its own rows back."""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import ondeck
from ondeck.serving.batching import Batcher, BatchPolicy

from .conftest import sample


class FakeModel:
    def __init__(self, fail: bool = False):
        self.runs: list[tuple[int, list[str], list[int]]] = []
        self.fail = fail

    def __call__(self, x, ids, counts):
        self.runs.append((x.shape[0], ids, counts))
        if self.fail:
            raise RuntimeError("boom")
        return {"double": x * 2}


def rows(n: int, start: float = 0.0) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.float32).reshape(n, 1)


def run(coro):
    return asyncio.run(coro)


def test_requests_arriving_together_share_one_run():
    async def main():
        model = FakeModel()
        b = Batcher(model, BatchPolicy(max_batch_size=64, max_batch_delay_us=0))
        futures = [b.submit(rows(n, 10 * i), f"r{i}") for i, n in enumerate((1, 3, 2))]
        outs = await asyncio.gather(*futures)
        return model.runs, outs

    runs, outs = run(main())
    assert runs == [(6, ["r0", "r1", "r2"], [1, 3, 2])]
    for i, (n, out) in enumerate(zip((1, 3, 2), outs)):
        np.testing.assert_array_equal(out["double"], rows(n, 10 * i) * 2)


def test_size_limit_closes_a_batch_and_a_big_request_runs_alone():
    async def main():
        model = FakeModel()
        b = Batcher(model, BatchPolicy(max_batch_size=4, max_batch_delay_us=10_000_000))
        first = [b.submit(rows(2), "a"), b.submit(rows(2), "b")]  # fills the batch: runs at once
        assert all(f.done() for f in first)
        big = b.submit(rows(9), "big")  # larger than the limit, nothing open: alone, at once
        assert big.done()
        small = b.submit(rows(3), "c")
        spill = b.submit(rows(2), "d")  # would overflow the open batch: the open one runs first
        assert small.done() and not spill.done()
        b.flush()
        await asyncio.gather(*first, big, small, spill)
        return model.runs

    assert [r[0] for r in run(main())] == [4, 9, 3, 2]


def test_batch_size_one_runs_inline():
    async def main():
        model = FakeModel()
        b = Batcher(model, BatchPolicy(max_batch_size=1, max_batch_delay_us=10_000_000))
        f = b.submit(rows(1), "x")
        assert f.done()
        return model.runs

    assert run(main()) == [(1, ["x"], [1])]


def test_delay_waits_for_company():
    async def main():
        model = FakeModel()
        b = Batcher(model, BatchPolicy(max_batch_size=64, max_batch_delay_us=50_000))
        f1 = b.submit(rows(1), "a")
        await asyncio.sleep(0)  # a loop iteration passes: with a delay the batch keeps waiting
        f2 = b.submit(rows(1), "b")
        await asyncio.wait_for(asyncio.gather(f1, f2), timeout=10)
        return model.runs

    assert run(main()) == [(2, ["a", "b"], [1, 1])]


def test_a_failing_run_fails_every_request_of_the_batch():
    async def main():
        b = Batcher(FakeModel(fail=True), BatchPolicy(max_batch_size=8))
        futures = [b.submit(rows(1), "a"), b.submit(rows(1), "b")]
        return await asyncio.gather(*futures, return_exceptions=True)

    assert [str(e) for e in run(main())] == ["boom", "boom"]


def test_server_merges_concurrent_requests(start_server, examples_dir, churn_rows):
    # A long delay and a batch of exactly 8: only the eighth request can close the batch.
    server = start_server("--max-batch-size", "8", "--max-batch-delay-us", "30000000")
    churn = ondeck.load(str(examples_dir / "churn" / "v1"))
    data = churn_rows[0][:8]

    def infer(i):
        body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 20], "data": data[i].tolist()}]}
        return server.json("POST", "/v2/models/churn/infer", body)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(infer, range(8)))
    assert [r[1]["outputs"][0]["data"][0] for r in results] == churn.predict(data).tolist()
    m = server.metrics()
    assert sample(m, "ondeck_batch_size_count") == 1
    assert sample(m, "ondeck_batch_size_sum") == 8
    assert sample(m, "ondeck_inference_rows_total") == 8


def test_per_package_override(start_server, examples_dir):
    server = start_server(packages=[f"{examples_dir / 'churn' / 'v1'}:max_batch_size=1,max_batch_delay_us=30000000"])
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 20], "data": [1.0] * 20}]}
    assert server.json("POST", "/v2/models/churn/infer", body)[0] == 200  # size 1: no waiting for the delay
