"""A sweep's table: one row per run, its parameters and its summary measurements.

Written as `sweep.csv` always and `sweep.parquet` when pyarrow is installed (the `sweeps`
extra); pandas, polars, R and DuckDB read either. Columns:

- `run`, `status` (done / failed / missing), `error` (a failed run's message);
- every varying field by its dotted name (`manifold.ambient_dim`, `seed`, ...), and `n`, `k`;
- measurements of the final snapshot, numbers or empty: test_accuracy, clinging_fraction,
  median_abs_h, dimple_depth, rms_tau, tau_ratio (RMS tau / sqrt(k/n)), sqrt_k_over_n,
  d_free, d_on, d_off, d_random_on, d_random_off (median minimal distances, counting failures:
  empty when most points had no boundary within reach), d_<mode>_lower (the median certified
  lower end of the distance bracket: a bound even where no boundary was found),
  on_over_free, off_over_free, random_on_over_free, random_off_over_free,
  dimension_only (sqrt(n/k), what a linear margin predicts for random_on / free), ms, ms_low,
  ms_high (the paired bootstrap interval), normal_energy_share (stretch), seconds.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from simulator.attacks.statistics import finite_or_none
from simulator.config.sweep import Sweep
from simulator.errors import RunError
from simulator.report.comparison import final_attacks, final_geometry
from simulator.runs.format import read_metrics
from simulator.runs.io import atomic_path
from simulator.sweeps.runner import RUNS_FOLDER, read_status

MODES = ("free", "on", "off", "random_on", "random_off")
MEASUREMENTS = ("test_accuracy", "clinging_fraction", "median_abs_h", "dimple_depth", "rms_tau", "tau_ratio",
                "sqrt_k_over_n", *(f"d_{mode}" for mode in MODES), *(f"d_{mode}_lower" for mode in MODES),
                *(f"{mode}_over_free" for mode in MODES[1:]), "dimension_only", "ms", "ms_low", "ms_high",
                "normal_energy_share", "seconds")


def measurements(metrics: dict, n: int, k: int) -> dict[str, float | None]:
    """The table's measurement columns from one run's metrics.json."""
    geometry, attacks = final_geometry(metrics), final_attacks(metrics)
    height, tangent = geometry.get("height") or {}, geometry.get("tangent") or {}
    row: dict[str, Any] = {
        "test_accuracy": metrics["training"]["final"].get("test_accuracy"),
        "clinging_fraction": height.get("clinging_fraction"), "median_abs_h": height.get("median_abs_h"),
        "dimple_depth": height.get("dimple_depth"), "rms_tau": tangent.get("rms_tau"),
        "tau_ratio": tangent.get("ratio_to_baseline"), "sqrt_k_over_n": math.sqrt(k / n),
        "normal_energy_share": (geometry.get("stretch") or {}).get("normal_energy_share"),
        "dimension_only": math.sqrt(n / k), "seconds": metrics.get("seconds"),
    }
    for mode in MODES:
        summary = attacks["modes"].get(mode) or {}
        row[f"d_{mode}"] = summary.get("median_distance_counting_failures")
        row[f"d_{mode}_lower"] = summary.get("median_lower_bound")
    free = finite_or_none(row["d_free"])
    for mode in MODES[1:]:
        distance = finite_or_none(row[f"d_{mode}"])
        row[f"{mode}_over_free"] = distance / free if distance is not None and free else None
    interval = attacks.get("manifold_specificity_interval") or [None, None]
    row["ms"], row["ms_low"], row["ms_high"] = attacks.get("manifold_specificity"), *interval
    return {key: finite_or_none(row[key]) for key in MEASUREMENTS}


def sweep_rows(sweep: Sweep, folder: Path) -> list[dict[str, Any]]:
    """One row per run of the sweep, in the sweep's order (missing runs included, marked so)."""
    status = read_status(folder)
    rows = []
    for run in sweep.runs:
        n, k = run.scene.manifold.ambient_dim, run.scene.manifold_dim()
        row: dict[str, Any] = {"run": run.name, **{field: _cell(run.varying.get(field)) for field in sweep.varying_fields},
                               "n": n, "k": k}
        path = folder / RUNS_FOLDER / run.name
        if (path / "metrics.json").is_file():
            row.update(status="done", error="", **measurements(read_metrics(path), n, k))
        else:
            entry = status.get(run.name, {})
            row.update(status="failed" if entry.get("status") == "failed" else "missing", error=entry.get("error", ""),
                       **dict.fromkeys(MEASUREMENTS))
        rows.append(row)
    return rows


def _cell(value):
    """A parameter as a table cell: numbers, booleans and strings as they are, lists as JSON text
    (read back by `read_sweep_table`)."""
    return value if isinstance(value, (int, float, str, bool)) or value is None else json.dumps(value)


def write_sweep_table(folder: Path, rows: list[dict[str, Any]]) -> list[Path]:
    """sweep.csv (and sweep.parquet with pyarrow), each written atomically. Returns the paths."""
    folder = Path(folder)
    columns = list(rows[0]) if rows else ["run", "status"]
    with atomic_path(folder / "sweep.csv") as temporary:
        with open(temporary, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows({key: ("" if value is None else value) for key, value in row.items()} for row in rows)
    written = [folder / "sweep.csv"]
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return written
    schema = _schema(pa, rows, columns)
    text = {field.name for field in schema if field.type == pa.string()}
    # A column of mixed kinds (a field set to 1 in one run and "auto" in another) is stored as text.
    cells = [{key: (str(value) if key in text and value is not None and not isinstance(value, str) else value)
              for key, value in row.items()} for row in rows]
    table = pa.Table.from_pylist(cells, schema=schema)
    with atomic_path(folder / "sweep.parquet") as temporary:
        pq.write_table(table, temporary)
    return written + [folder / "sweep.parquet"]


def _schema(pa, rows: list[dict], columns: list[str]):
    """Measurements as float64 (empty = null); parameters typed by their values."""
    fields = []
    for column in columns:
        if column in MEASUREMENTS:
            kind = pa.float64()
        else:
            values = [row[column] for row in rows if row[column] is not None]
            if values and all(isinstance(v, bool) for v in values):
                kind = pa.bool_()
            elif values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
                kind = pa.int64()
            elif values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                kind = pa.float64()
            else:
                kind = pa.string()
        fields.append(pa.field(column, kind))
    return pa.schema(fields)


def read_sweep_table(folder: Path) -> list[dict[str, Any]]:
    """sweep.csv back as rows (numbers parsed; empty cells None)."""
    path = Path(folder) / "sweep.csv"
    if not path.is_file():
        raise RunError(f"{folder}: no sweep.csv here; run `sim sweep SWEEP.yaml` first (the sweep folder is "
                       f"<out>/<sweep name>/).")
    with open(path, newline="") as handle:
        return [{key: _parse(value) for key, value in row.items()} for row in csv.DictReader(handle)]


def _parse(text: str):
    """A CSV cell back as the value it was written from: empty -> None, True/False -> bool, JSON
    lists and mappings (list-valued parameters) -> their value, numbers -> int or float."""
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except ValueError:
            return text
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
