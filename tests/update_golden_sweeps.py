"""Write one study's golden values into tests/golden_sweeps.json from a finished sweep folder.

    sim sweep scenes/sweeps/optimizer_and_batch_norm.yaml --out /tmp/studies
    python tests/update_golden_sweeps.py /tmp/studies/optimizer_and_batch_norm

Run it only when a change is meant to move the published numbers, and update the README's table
in the same commit (tests/test_sweeps.py pins both).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from simulator.sweeps.table import read_sweep_table

GOLDEN_SWEEPS = Path(__file__).resolve().parent / "golden_sweeps.json"
# The measurements each study's README table is built from.
GOLDEN_COLUMNS = ("clinging_fraction", "d_free", "d_off_lower", "ms", "normal_energy_share", "off_over_free",
                  "rms_tau", "on_over_free", "random_on_over_free", "test_accuracy")


def golden_values(folder: Path) -> dict[str, dict]:
    rows = read_sweep_table(folder)
    failed = [row["run"] for row in rows if row["status"] != "done"]
    if failed:
        raise SystemExit(f"{folder}: runs not done: {', '.join(failed)}; golden values come from a complete sweep")
    return {row["run"]: {column: row[column] for column in GOLDEN_COLUMNS} for row in sorted(rows, key=lambda r: r["run"])}


def main(folder: str) -> None:
    folder = Path(folder)
    golden = json.loads(GOLDEN_SWEEPS.read_text())
    golden[folder.name] = golden_values(folder)
    GOLDEN_SWEEPS.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    print(f"{GOLDEN_SWEEPS}: {folder.name}, {len(golden[folder.name])} runs")


if __name__ == "__main__":
    main(sys.argv[1])
