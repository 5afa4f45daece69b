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
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np


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


@contextmanager
def staged_run_dir(final: Path) -> Iterator[Path]:
    """A hidden folder to fill; on success it replaces `final` (an older run there is removed)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    os.chmod(staging, 0o755)  # mkdtemp makes owner-only folders
    if final.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.replace(final, retired / final.name)
        os.replace(staging, final)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(staging, final)
