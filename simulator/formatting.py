"""How numbers are printed in every table, report and terminal line: one formatter, one mark
for a missing value.

    fmt(0.123456)        -> "0.1235"      4 significant digits by default
    fmt(0.123456, 3)     -> "0.123"
    fmt(None), fmt(nan)  -> "n/a"         also +-inf: a value that was not measured or not found
    percent(0.9742)      -> "97.4%"

Nothing here imports the project: every layer may use it.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

# What a table shows where a value is missing: None (not measured), NaN or infinity (not found).
MISSING = "n/a"


def fmt(value: Any, digits: int = 4) -> str:
    """A value as table text: reals to `digits` significant digits, integers in full, booleans as
    yes/no, lists and tuples element-wise, None/NaN/inf as MISSING, anything else as str()."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):  # numpy integers too
        return str(int(value))
    if isinstance(value, numbers.Real):
        value = float(value)
        return f"{value:.{digits}g}" if math.isfinite(value) else MISSING
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt(item, digits) for item in value) + "]"
    return str(value)


def percent(value: Any, decimals: int = 1) -> str:
    """A share (0.974) as a percentage ("97.4%" with decimals=1); MISSING when not a finite number."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value)):
        return f"{float(value):.{decimals}%}"
    return MISSING
