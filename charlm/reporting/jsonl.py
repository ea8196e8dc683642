"""Where training metrics go: metrics.jsonl in the run directory, and TensorBoard when asked.

Both receive the same records: one per log interval (`"split": "train"`) and one per
evaluation (`"valid"`, `"test"`). TensorBoard gets every numeric field as the scalar
`SPLIT/FIELD` at the record's step.
"""

from __future__ import annotations

import json
from pathlib import Path

from charlm.errors import CharlmError
from charlm.files import write_atomic

METRICS = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
_NOT_SCALARS = {"split", "step", "epoch"}


class MetricsLog:
    """With `enabled=False` (torchrun ranks other than 0) every method does nothing."""

    def __init__(self, run_dir: Path, tensorboard: bool = False, enabled: bool = True):
        self.path = Path(run_dir) / METRICS
        self.enabled = enabled
        self.writer = None
        if tensorboard and enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise CharlmError(
                    "train.tensorboard: true needs the tensorboard package; install it with "
                    "pip install 'charlm[tensorboard]' or set train.tensorboard: false"
                ) from None
            self.writer = SummaryWriter(log_dir=str(Path(run_dir) / TENSORBOARD_DIR))

    def start_fresh(self) -> None:
        """Forget the records of an attempt that died before its first checkpoint."""
        if self.enabled:
            self.path.unlink(missing_ok=True)

    def truncate_after(self, step: int) -> None:
        """Drop records past `step` (and test scores), so a resumed run never repeats a step."""
        if not self.enabled or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line torn by a kill mid-write
            if record.get("step", 0) <= step and record.get("split") != "test":
                kept.append(line)
        try:
            write_atomic(self.path, "".join(line + "\n" for line in kept).encode())
        except OSError as exc:
            raise CharlmError(f"could not write {self.path}: {exc.strerror or exc}; free disk space, then --resume") from None

    def append(self, record: dict) -> None:
        if not self.enabled:
            return
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as exc:
            raise CharlmError(f"could not write {self.path}: {exc.strerror or exc}; free disk space, then --resume") from None
        if self.writer is not None:
            for key, value in record.items():
                if key not in _NOT_SCALARS and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"{record['split']}/{key}", value, record["step"])
            if record["split"] != "train":
                self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
