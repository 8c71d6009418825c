"""``ondeck batch``: score a CSV or Parquet file offline with a package, in chunks.

Memory stays flat whatever the input size: the file is streamed in chunks of ``chunk_rows``, each
chunk is validated with the same rules the server uses (:mod:`ondeck.package.schema`), its valid
rows are predicted and appended to the output Parquet file, and its invalid rows go to the errors
file with their row number (0-based, counting data rows only) and the reason.
"""
from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from ondeck.errors import UserError
from ondeck.package.build import LABEL_OUTPUT, PROBA_OUTPUT, VALUE_OUTPUT
from ondeck.package.load import Model

DEFAULT_CHUNK_ROWS = 65_536
CSV_BLOCK_BYTES = 1 << 20


@dataclass
class BatchSummary:
    rows: int = 0
    scored: int = 0
    invalid: int = 0
    seconds: float = 0.0

    def line(self, output: Path, errors: Path | None) -> str:
        rate = self.rows / self.seconds if self.seconds else 0.0
        text = (f"scored {self.scored:,} of {self.rows:,} rows in {self.seconds:.1f}s ({rate:,.0f} rows/s) "
                f"-> {output}")
        if self.invalid:
            text += f"; {self.invalid:,} invalid rows" + (f" -> {errors}" if errors else " (no --errors file given)")
        return text


def score_file(
    package_dir: str | Path,
    input_path: str | Path,
    output_path: str | Path,
    errors_path: str | Path | None = None,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    passthrough: tuple[str, ...] = (),
    progress: bool = True,
) -> BatchSummary:
    import pyarrow as pa
    import pyarrow.parquet as pq

    model = Model(package_dir)
    input_path, output_path = Path(input_path), Path(output_path)
    if not input_path.is_file():
        raise UserError(f"input file not found: {input_path}")
    if output_path.suffix != ".parquet":
        raise UserError(f"output must be a .parquet file, got {output_path}")
    features = list(model.schema.features)
    chunks, total = open_chunks(input_path, features, list(passthrough), chunk_rows)

    out_schema = _output_schema(model, passthrough)
    summary = BatchSummary()
    started = time.perf_counter()
    tmp_out = output_path.with_name(f".{output_path.name}.partial")
    writer = pq.ParquetWriter(tmp_out, out_schema)
    errors = _ErrorsWriter(errors_path, features)
    bar = _progress(total, progress)
    try:
        for table in chunks:
            n = table.num_rows
            x = features_array(table, features)
            valid, reasons = model.schema.row_problems(x)
            rows = np.arange(summary.rows, summary.rows + n, dtype=np.int64)
            if reasons:
                errors.write(rows[~valid], reasons, x[~valid])
            if valid.any():
                xv = np.ascontiguousarray(x[valid], dtype=np.float32)
                writer.write_table(_predictions_table(model, out_schema, rows[valid], table, valid, xv, passthrough))
            summary.rows += n
            summary.scored += int(valid.sum())
            summary.invalid += n - int(valid.sum())
            bar.update(n)
    except BaseException:
        writer.close()
        tmp_out.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
        errors.close()
    writer.close()
    tmp_out.replace(output_path)
    summary.seconds = time.perf_counter() - started
    return summary


def open_chunks(path: Path, features: list[str], passthrough: list[str], chunk_rows: int):
    """An iterator of Arrow tables with the wanted columns, and the total row count if known."""
    import pyarrow as pa

    wanted = features + [c for c in passthrough if c not in features]
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            # Buffered page reads: without them a whole column chunk of a row group (which may
            # hold a million rows) sits in memory at once.
            pf = pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False)
        except Exception as exc:
            raise UserError(f"cannot read {path} as Parquet: {exc}") from None
        _check_columns(path, pf.schema_arrow.names, features, passthrough)
        batches = pf.iter_batches(batch_size=chunk_rows, columns=wanted)
        return (pa.Table.from_batches([b]) for b in batches), pf.metadata.num_rows
    if path.suffix in (".csv", ".txt") or path.name.endswith(".csv.gz"):
        return _csv_chunks(path, features, passthrough, wanted, chunk_rows), None
    raise UserError(f"input must be .csv or .parquet, got {path.name}")


def _csv_chunks(path: Path, features, passthrough, wanted, chunk_rows) -> Iterator:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    try:
        with open(path, newline="") as f:
            header = next(csv.reader(f), None)
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    if not header:
        raise UserError(f"{path} is empty (no header line)")
    _check_columns(path, header, features, passthrough)
    # Read every wanted column as text and convert ourselves: Arrow's CSV reader would abort the
    # whole stream on one non-numeric cell, but one bad cell must only cost its row.
    convert = pacsv.ConvertOptions(include_columns=wanted, column_types={c: pa.string() for c in wanted},
                                   strings_can_be_null=True)
    # Small blocks keep the reader's read-ahead (and so peak memory) small; they are re-assembled
    # into chunks of chunk_rows so that the model still runs on large batches.
    read = pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES)
    pending, rows = [], 0
    try:
        for batch in pacsv.open_csv(path, read_options=read, convert_options=convert):
            pending.append(batch)
            rows += batch.num_rows
            if rows >= chunk_rows:
                yield pa.Table.from_batches(pending)
                pending, rows = [], 0
    except pa.ArrowInvalid as exc:
        raise UserError(f"cannot parse {path}: {exc}") from None
    if pending:
        yield pa.Table.from_batches(pending)


def _check_columns(path: Path, names: list[str], features: list[str], passthrough: tuple[str, ...] | list[str]) -> None:
    missing = [c for c in features if c not in names]
    if missing:
        raise UserError(f"{path.name} does not match the package: missing feature column"
                        f"{'s' if len(missing) > 1 else ''} {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    unknown = [c for c in passthrough if c not in names]
    if unknown:
        raise UserError(f"{path.name} has no column {', '.join(unknown)} to pass through")


def features_array(table, features: list[str]) -> np.ndarray:
    """float64 ``[n, features]`` with NaN where a value is missing or not a number."""
    import pyarrow as pa
    import pyarrow.compute as pc

    cols = []
    for name in features:
        col = table.column(name)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            try:
                col = pc.cast(col, pa.float64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                # Slow path, only for a chunk holding a bad cell: non-numbers become NaN (invalid row).
                import pandas as pd

                col = pa.chunked_array([pa.array(pd.to_numeric(col.to_pandas(), errors="coerce"), pa.float64())])
        cols.append(col.to_numpy(zero_copy_only=False).astype(np.float64, copy=False))
    return np.column_stack(cols) if cols else np.empty((table.num_rows, 0))


def _output_schema(model: Model, passthrough: tuple[str, ...]):
    import pyarrow as pa

    fields = [pa.field("row", pa.int64())]
    fields += [pa.field(c, pa.string()) for c in passthrough]  # CSV text or Parquet values, as text
    if model.task == "classification":
        label_type = pa.string() if any(isinstance(c, str) for c in model.classes) else pa.int64()
        fields.append(pa.field(LABEL_OUTPUT, label_type))
        fields += [pa.field(f"proba_{c}", pa.float32()) for c in model.classes]
    else:
        fields.append(pa.field(VALUE_OUTPUT, pa.float32()))
    return pa.schema(fields)


def _predictions_table(model: Model, schema, rows, table, valid, x32, passthrough):
    import pyarrow as pa
    import pyarrow.compute  # noqa: F401 - pa.compute.cast below

    out = model.run(x32)
    columns = [pa.array(rows)]
    for c in passthrough:
        columns.append(pa.compute.cast(table.column(c).filter(pa.array(valid)), pa.string()))
    if model.task == "classification":
        proba = out[PROBA_OUTPUT]
        labels = np.asarray(model.classes, dtype=object)[proba.argmax(axis=1)]
        columns.append(pa.array(labels.tolist(), schema.field(LABEL_OUTPUT).type))
        columns += [pa.array(proba[:, i]) for i in range(proba.shape[1])]
    else:
        columns.append(pa.array(out[VALUE_OUTPUT].reshape(-1)))
    return pa.Table.from_arrays(columns, schema=schema)


class _ErrorsWriter:
    """Invalid rows as CSV: ``row``, ``reason`` and the feature values as read (NaN if unreadable)."""

    def __init__(self, path: str | Path | None, features: list[str]):
        self.path = Path(path) if path else None
        self._file = None
        self._features = features

    def write(self, rows: np.ndarray, reasons: list[str], values: np.ndarray) -> None:
        if self.path is None:
            return
        if self._file is None:
            self._file = open(self.path, "w", newline="")
            self._csv = csv.writer(self._file)
            self._csv.writerow(["row", "reason", *self._features])
        for r, reason, vals in zip(rows, reasons, values):
            self._csv.writerow([int(r), reason, *vals.tolist()])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _progress(total: int | None, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit=" rows", unit_scale=True, disable=not enabled, mininterval=0.5, leave=False)
