"""What the A/B benchmarks share (sampling_ab.py, scan_memory.py, train_speed_ab.py,
recipe_peak_memory.py): each figure from a fresh process, and rounds that alternate the
variants' order, so that no variant always runs first on a warm or a drifting machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence


def child_figures(script: str, args: Sequence[str], env: dict[str, str] | None = None):
    """Run `python SCRIPT ARGS` in a fresh process and return what its last line of standard
    output holds as JSON; a failed child ends the benchmark with its own error's last lines."""
    done = subprocess.run([sys.executable, script, *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)}: the child process failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def in_turn(variants: Sequence[str], round_index: int) -> list[str]:
    """The variants in the order round `round_index` runs them: as given, then reversed."""
    return list(variants) if round_index % 2 == 0 else list(variants)[::-1]
