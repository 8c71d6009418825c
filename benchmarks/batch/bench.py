"""`ondeck batch` vs raw onnxruntime on the same churn rows: rows/s as a ratio, and peak RSS.

Raw onnxruntime scores the rows from memory at the same batch size (the ceiling: no parsing, no
validation, no output); `ondeck batch` streams them from CSV and from Parquet in a child process
whose peak RSS comes from wait4(). Every heavy step runs in its own child so that this orchestrating
process stays small: Linux carries a process's peak RSS across fork and exec, so a child forked
from a large parent would report the parent's peak.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

CHUNK = 65_536


def make_inputs(rows: int, work: Path) -> tuple[Path, Path]:
    from ondeck.package.examples import CHURN_FEATURES, churn_frame

    pq_path, csv_path = work / f"churn-{rows}.parquet", work / f"churn-{rows}.csv"
    if pq_path.exists() and csv_path.exists():
        return pq_path, csv_path
    writer_pq = csv_writer = None
    step = 1_000_000
    for i, start in enumerate(range(0, rows, step)):
        frame = churn_frame(min(step, rows - start), seed=100 + i)[list(CHURN_FEATURES)]
        table = pa.Table.from_pandas(frame, preserve_index=False)
        writer_pq = writer_pq or pq.ParquetWriter(pq_path, table.schema)
        writer_pq.write_table(table)
        csv_writer = csv_writer or pacsv.CSVWriter(csv_path, table.schema)
        csv_writer.write_table(table)
    writer_pq.close()
    csv_writer.close()
    return pq_path, csv_path


def raw_onnxruntime(pkg: Path, pq_path: Path) -> float:
    import onnxruntime as ort

    x = pq.read_table(pq_path).to_pandas().to_numpy(np.float32)
    sess = ort.InferenceSession(str(pkg / "model.onnx"), providers=["CPUExecutionProvider"])
    started = time.perf_counter()
    for i in range(0, len(x), CHUNK):
        sess.run(None, {"input": x[i:i + CHUNK]})
    return len(x) / (time.perf_counter() - started)


def in_child(*args: str) -> str:
    return subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True).stdout.strip()


def ondeck_batch(pkg: Path, inp: Path, out: Path, rows: int) -> tuple[float, float]:
    cmd = [sys.executable, "-m", "ondeck.cli", "batch", str(pkg), "--input", str(inp), "--output", str(out),
           "--chunk-rows", str(CHUNK), "--no-progress"]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"ondeck batch failed on {inp}")
    return rows / seconds, usage.ru_maxrss / 1024  # ru_maxrss is KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default="1000000,10000000")
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "ondeck-bench-batch"))
    ap.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = Path(args.work)
    if args.child:  # one heavy step, in its own process (see the module docstring)
        task, rows = args.child[0], int(args.child[1])
        pq_path, _ = make_inputs(rows, work)
        if task == "raw":
            print(raw_onnxruntime(work / "examples" / "churn" / "v1", pq_path))
        return
    work.mkdir(parents=True, exist_ok=True)
    pkg = work / "examples" / "churn" / "v1"
    if not (pkg / "ondeck.json").exists():
        from ondeck.package.examples import build_examples

        build_examples(work / "examples", log=lambda m: None)
    print(f"| rows | source | rows/s | x raw onnxruntime | peak RSS MB |")
    print(f"|---:|---|---:|---:|---:|")
    for rows in (int(r) for r in args.rows.split(",")):
        in_child("--work", str(work), "--child", "make", str(rows))
        pq_path, csv_path = make_inputs(rows, work)  # now only names the files made by the child
        raw = float(in_child("--work", str(work), "--child", "raw", str(rows))) if rows <= 2_000_000 else None
        if raw:
            print(f"| {rows:,} | raw onnxruntime (in memory) | {raw:,.0f} | 1.00 | - |", flush=True)
            raw_rate = raw
        for source, path in (("parquet", pq_path), ("csv", csv_path)):
            rate, rss = ondeck_batch(pkg, path, work / "out.parquet", rows)
            print(f"| {rows:,} | ondeck batch, {source} | {rate:,.0f} | {rate / raw_rate:.2f} | {rss:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
