"""The exceptions charlm raises for problems a user can fix.

Every message says what is wrong, the value and where it came from, and how to fix it. The CLI
prints a CharlmError as one red line and exits non-zero; anything else is a bug and keeps its
traceback.
"""


class CharlmError(Exception):
    """A problem the user can fix; its message is shown as is."""


class ConfigError(CharlmError):
    """The config file or a --set override is invalid. Holds every problem found."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"{source}: {len(problems)} config {noun}:\n{lines}")


class DataError(CharlmError):
    """A corpus file is missing, unreadable, too short or not valid UTF-8."""


class DownloadError(CharlmError):
    """A corpus download failed or delivered bytes with the wrong checksum."""


class CheckpointError(CharlmError):
    """A checkpoint is missing, corrupt, unsafe or incompatible with the run."""


class SamplingError(CharlmError):
    """A sampling option or prompt cannot be honoured."""


class TrainingError(CharlmError):
    """Training cannot continue (non-finite loss, run directory conflict)."""
