"""The folder an export writes into, writing its files, and the records every format writes
beside its weights: the vocabulary and where the model came from."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from charlm import __version__
from charlm.data.corpora import corpus_kind
from charlm.errors import CharlmError
from charlm.files import publish, write_failure_fix
from charlm.inference.exported import FORMAT_VERSION, ORIGIN
from charlm.inference.trained import TrainedModel


def prepare_folder(output: Path, fmt: str) -> bool:
    """Make `output` if missing; return whether it was made. An existing folder must be empty
    or an earlier export in the same format (its export.json), so that an export never mixes its
    files into a run directory, anyone's folder, or another format's files."""
    try:
        if output.exists() and not output.is_dir():
            raise CharlmError(f"-o {output} is a file; name a folder for the export")
        if output.is_dir() and any(output.iterdir()):
            if not (output / ORIGIN).is_file():
                raise CharlmError(f"-o {output} is a folder with other files in it; name an empty or new folder")
            earlier = _earlier_format(output / ORIGIN)
            if earlier != fmt:
                raise CharlmError(f"-o {output} holds an export in format {earlier}; name another folder for {fmt}")
            return False
        made = not output.exists()
        output.mkdir(parents=True, exist_ok=True)
        return made
    except OSError as exc:
        raise CharlmError(
            f"cannot use -o {output}: {exc.strerror or exc}; {write_failure_fix(exc, 'choose another -o', option='-o')}"
        ) from None


def discard_made(output: Path) -> None:
    """Remove the folder this export made, with whatever it wrote before it failed (a refused
    model writes nothing; a full disk can stop it between two files)."""
    if output.is_dir() and not output.is_symlink():
        shutil.rmtree(output, ignore_errors=True)


def _earlier_format(origin: Path) -> str:
    """The format an earlier export.json names (the first ones, safetensors only, named none)."""
    try:
        value = json.loads(origin.read_bytes()[: 1 << 20].decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return "unknown"
    fmt = value.get("export", "safetensors") if isinstance(value, dict) else None
    return fmt if isinstance(fmt, str) and fmt.isidentifier() else "unknown"


def write_file(path: Path, data: bytes | str | dict) -> Path:
    """Publish one file of an export atomically (JSON for a dict)."""
    if isinstance(data, dict):
        data = json.dumps(data, indent=1, ensure_ascii=True) + "\n"
    if isinstance(data, str):
        data = data.encode("utf-8")
    publish(path, data, "-o")
    return path


def vocab_record(trained: TrainedModel) -> dict:
    """vocab.json: the tokens in id order, the unit, the corpus, and each token as text shows it
    (PTB-char's "_" is a space)."""
    corpus = corpus_kind(trained.cfg.data.corpus)
    return {
        "tokens": list(trained.vocab.tokens),
        "unit": trained.vocab.unit,
        "corpus": trained.cfg.data.corpus,
        "readable": [corpus.to_readable(t) for t in trained.vocab.tokens],
    }


def origin_record(trained: TrainedModel, run: Path, fmt: str) -> dict:
    """export.json: the format version and the run, checkpoint, step and weights exported."""
    return {
        "format": FORMAT_VERSION,
        "export": fmt,
        "charlm": __version__,
        "run": str(run),
        "checkpoint": str(trained.path),
        "step": trained.step,
        "weights": trained.weights,
    }
