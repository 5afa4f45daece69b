"""Atomic writes: every file of a run appears whole or not at all.

A new run is written into a hidden staging folder and renamed into place only when complete,
so a failed or interrupted run never leaves a half-written directory. Later commands add files
one at a time, each written atomically (temporary file + rename).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from simulator.errors import RunError


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        yield Path(temporary)
        os.chmod(temporary, 0o644)  # mkstemp makes owner-only files; results are meant to be shared
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text)


def _json_safe(value: Any) -> Any:
    """NaN and infinities become null: strict JSON that every tool (and browsers) can read."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def write_arrays(path: Path, arrays: dict) -> None:
    """A compressed .npz of named numpy arrays (np.load reads it), atomically."""
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.savez_compressed(handle, **arrays)


def read_arrays(path: Path, exclude: tuple[str, ...] = ()) -> dict:
    """The arrays of an .npz written by `write_arrays` (pickled objects refused), minus `exclude`."""
    with np.load(path, allow_pickle=False) as stored:
        return {key: stored[key] for key in stored.files if key not in exclude}


def write_json(path: Path, value: Any) -> None:
    write_text(path, json.dumps(_json_safe(value), indent=2, allow_nan=False) + "\n")


def write_torch(path: Path, value: Any) -> None:
    """torch.save, atomically and byte-reproducibly: saved through an open file, the archive's
    records are named "archive/..." rather than after the (random) temporary file's name."""
    import torch  # heavy; only the writers of model files need it

    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        torch.save(value, handle)


# --------------------------------------------------------------------------- metrics.json and timings.json
# Two runs of a scene on one machine write byte-identical files, except wall-clock durations.
# Those (every key named "seconds" or ending in "_seconds") are kept out of metrics.json, in
# timings.json, keyed by their dotted path; `runs.format.read_metrics` puts them back.

TIMINGS_FILE = "timings.json"


def is_timing_key(key: str) -> bool:
    return key == "seconds" or key.endswith("_seconds")


def split_timings(value: Any, prefix: str = "") -> tuple[Any, dict[str, float]]:
    """(`value` without its timing keys, {dotted path: seconds}); list items are addressed by index."""
    timings: dict[str, float] = {}
    if isinstance(value, dict):
        kept = {}
        for key, item in value.items():
            path = f"{prefix}{key}"
            if is_timing_key(key) and (item is None or isinstance(item, (int, float))):
                timings[path] = item
            else:
                kept[key], inner = split_timings(item, path + ".")
                timings.update(inner)
        return kept, timings
    if isinstance(value, list):
        kept_items = []
        for index, item in enumerate(value):
            kept_item, inner = split_timings(item, f"{prefix}{index}.")
            kept_items.append(kept_item)
            timings.update(inner)
        return kept_items, timings
    return value, timings


def merge_timings(value: Any, timings: dict[str, float]) -> None:
    """Put `split_timings`' durations back into `value` (in place); paths that no longer exist
    (the section was recomputed without them), and any that do not end in a duration key, are
    skipped: timings.json can never overwrite a measurement."""
    for path, seconds in timings.items():
        *parents, last = path.split(".")
        if not is_timing_key(last):
            continue
        node = value
        for part in parents:
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                node = None
                break
        if isinstance(node, dict):
            node[last] = seconds


def write_metrics(folder: Path, metrics: dict) -> None:
    """metrics.json (everything reproducible) and timings.json (every duration) of a run."""
    reproducible, timings = split_timings(metrics)
    write_json(Path(folder) / TIMINGS_FILE, timings)
    write_json(Path(folder) / "metrics.json", reproducible)


def read_timings(folder: Path) -> dict[str, float]:
    """timings.json of a run as {dotted path: seconds}; empty when absent or unreadable (timings
    are informative only: no number the tool reports depends on them)."""
    try:
        timings = json.loads((Path(folder) / TIMINGS_FILE).read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    if not isinstance(timings, dict):
        return {}
    return {key: value for key, value in timings.items()
            if isinstance(key, str) and (value is None or isinstance(value, (int, float)))}


# Every run folder holds this file: the tool replaces only folders that carry it (or, for runs
# written before it existed, a metrics.json naming the same run), never a user's folder or file.
RUN_MARKER = ".sim-run"
# Staging and retired folders hold the writing process's id, so a later run can tell the leftovers
# of a killed run (owner gone: removed) from a run in progress (owner alive: left alone).
OWNER_FILE = ".owner"
# A staging folder also says which stage its run is in ("training", "measuring", ...): what a
# resumed run reports, and what the kill-and-resume tests wait for. Removed when the run completes.
STAGE_FILE = ".stage"


def note_stage(staging: Path, stage: str) -> None:
    write_text(Path(staging) / STAGE_FILE, stage + "\n")


def noted_stage(staging: Path) -> str | None:
    try:
        return (Path(staging) / STAGE_FILE).read_text().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def check_run_target(final: Path) -> None:
    """RunError unless `final` is free or a run folder this tool wrote (then it may be replaced).
    Called before any work starts, and again just before a finished run is moved into place."""
    final = Path(final)
    parent = final.parent
    if parent.exists() and not parent.is_dir():
        raise RunError(f"{parent}: the output folder is a file; pass --out a folder (it is created if missing).")
    if not final.exists() and not final.is_symlink():
        return
    if final.is_symlink() or not final.is_dir():
        raise RunError(f"{final}: a file (not a run folder) is in the way of the run's output; move it, or pass "
                       f"another --out. Nothing was changed.")
    if not is_run_folder(final):
        raise RunError(f"{final}: this folder was not written by `sim run` (it has no {RUN_MARKER} marker), so it "
                       f"is not replaced; move it, or pass another --out. Nothing was changed.")


def is_run_folder(folder: Path) -> bool:
    """True for a folder this tool wrote: its marker, or a run metrics.json of the same name."""
    folder = Path(folder)
    if (folder / RUN_MARKER).is_file():
        return True
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(metrics, dict) and isinstance(metrics.get("format_version"), int) \
        and metrics.get("scene") == folder.name


def remove_leftovers(final: Path, keep: Path | None = None) -> list[Path]:
    """Remove the staging and retired folders of killed runs of `final` (but `keep`); returns
    what was removed."""
    final = Path(final)
    removed = []
    for folder in _leftovers(final, ".partial-") + _leftovers(final, ".old-"):
        if folder != keep:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def interrupted_staging(final: Path) -> Path | None:
    """The most recently changed staging folder of a killed run of `final`, or None."""
    candidates = [folder for folder in _leftovers(Path(final), ".partial-") if (folder / RUN_MARKER).is_file()]
    return max(candidates, key=lambda folder: folder.stat().st_mtime, default=None)


def _leftovers(final: Path, prefix: str) -> list[Path]:
    """Folders `.<name><prefix>*` beside `final` whose writing process is gone."""
    return [folder for folder in sorted(final.parent.glob(f".{glob_escape(final.name)}{prefix}*"))
            if folder.is_dir() and not folder.is_symlink() and not _owner_alive(folder)]


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def _owner_alive(folder: Path) -> bool:
    try:
        pid = int((folder / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _owned_temporary_folder(prefix: str, parent: Path) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    (folder / OWNER_FILE).write_text(str(os.getpid()))
    return folder


@contextmanager
def staged_run_dir(final: Path, resume: bool = False) -> Iterator[Path]:
    """A hidden folder to fill; on success it replaces `final`, which must be free or an older run
    (`check_run_target`). Leftovers of killed runs of the same name are removed first, except,
    with `resume`, the newest staging folder, which is handed back to be continued."""
    final = Path(final)
    check_run_target(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    adopted = interrupted_staging(final) if resume else None
    remove_leftovers(final, keep=adopted)
    if adopted is not None:
        staging = adopted
        (staging / OWNER_FILE).write_text(str(os.getpid()))  # ours now: no other run removes it
    else:
        staging = _owned_temporary_folder(f".{final.name}.partial-", final.parent)
        (staging / RUN_MARKER).write_text(json.dumps({"tool": "dimpled-manifold-simulator", "run": final.name})
                                          + "\n")
    try:
        yield staging
        check_run_target(final)  # again: something may have appeared there while the run worked
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    (staging / OWNER_FILE).unlink()
    (staging / STAGE_FILE).unlink(missing_ok=True)
    os.chmod(staging, 0o755)  # mkdtemp makes owner-only folders
    if final.exists():
        retired = _owned_temporary_folder(f".{final.name}.old-", final.parent)
        os.replace(final, retired / final.name)
        os.replace(staging, final)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, final)
