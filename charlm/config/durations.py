"""Durations as people write them ("15m", "90s", "2h", "1h30m", or seconds as a number), for
train.time_budget and `charlm train --time`.

A budget is stored in its canonical spelling (900 and "900s" become "15m", "90s" becomes
"1m30s"), so a run resumed with the same budget spelt another way is not refused as changed.
"""

from __future__ import annotations

import math
import re
from typing import Any

from charlm.errors import quote

MIN_BUDGET_S = 1.0
MAX_BUDGET_S = 365 * 24 * 3600.0  # a year: beyond that it is a typo (15h for 15m is not caught)

_UNITS = {"h": 3600, "m": 60, "s": 1}
# Units in order, each at most once: 2h, 1h30m, 90s, 1.5h, 2m30.5s; no spaces, no other units.
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")
_SECONDS = re.compile(r"\d+(?:\.\d+)?")


def parse_duration(value: Any) -> float:
    """Seconds in `value`: a positive number (seconds) or a string such as 15m, 90s, 2h, 1h30m.

    Raises:
        ValueError: with a message naming the value and the accepted forms.
    """
    forms = "write it as 15m, 90s, 2h or 1h30m (or seconds as a number)"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"must be a duration, got {quote(value)}; {forms}")
    if isinstance(value, str):
        text = value.strip().lower()
        match = _DURATION.fullmatch(text)
        if _SECONDS.fullmatch(text):
            seconds = float(text)
        elif text and match and any(match.groups()):
            seconds = sum(float(part) * unit for part, unit in zip(match.groups(), _UNITS.values()) if part)
        else:
            raise ValueError(f"{quote(value)} is not a duration; {forms}")
    else:
        seconds = float(value)
    if seconds < MIN_BUDGET_S:
        raise ValueError(f"{quote(value)} is too short: a budget is at least {MIN_BUDGET_S:g} second")
    if not math.isfinite(seconds) or seconds > MAX_BUDGET_S:
        raise ValueError(f"{quote(value)} is more than a year; {forms}")
    return seconds


def format_duration(seconds: float) -> str:
    """The canonical spelling: 900 -> 15m, 5400 -> 1h30m, 90 -> 1m30s, 2.5 -> 2.5s."""
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    secs += seconds - whole
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs:.6g}s" if secs else ""]
    return "".join(parts) or "0s"
