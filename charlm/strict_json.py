"""The one way charlm turns a value into JSON text: strict JSON, which every parser reads.

Python's json writes NaN and Infinity, which are not JSON (RFC 8259) and which `jq`, browsers
and most other readers refuse. A figure that is not finite (a model whose scores overflow, a
run that diverged) is written as null, the JSON for "no value", as a table shows it blank.
"""

from __future__ import annotations

import json
import math
from typing import Any


def finite_or_none(value: Any) -> Any:
    """`value` with every float that is not finite replaced by None, inside dicts, lists and tuples."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """`value` as strict JSON text (json.dumps's keyword arguments pass through)."""
    return json.dumps(finite_or_none(value), allow_nan=False, **kwargs)
