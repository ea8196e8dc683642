"""The folder an export writes into, and writing its files."""

from __future__ import annotations

import json
from pathlib import Path

from charlm.errors import CharlmError
from charlm.files import publish, write_failure_fix
from charlm.inference.exported import ORIGIN


def prepare_folder(output: Path) -> None:
    """Make `output` if missing. An existing folder must be empty or an earlier export (its
    export.json), so that an export never mixes its files into a run directory or anyone's."""
    try:
        if output.exists() and not output.is_dir():
            raise CharlmError(f"-o {output} is a file; name a folder for the export")
        if output.is_dir() and any(output.iterdir()) and not (output / ORIGIN).is_file():
            raise CharlmError(f"-o {output} is a folder with other files in it; name an empty or new folder")
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CharlmError(f"cannot use -o {output}: {exc.strerror or exc}; {write_failure_fix(exc, 'choose another -o', option='-o')}") from None


def write_file(path: Path, data: bytes | str | dict) -> Path:
    """Publish one file of an export atomically (JSON for a dict)."""
    if isinstance(data, dict):
        data = json.dumps(data, indent=1, ensure_ascii=True) + "\n"
    if isinstance(data, str):
        data = data.encode("utf-8")
    publish(path, data, "-o")
    return path
