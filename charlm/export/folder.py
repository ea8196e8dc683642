"""The folder an export publishes, what it may replace, and the records every format writes
beside its weights: the vocabulary and where the model came from.

A folder is built beside `-o` and swapped in whole (files.publish_folder): a reader sees the
earlier export or the new one, never a mix, and a kill leaves one of them. export.json, written
last, names every other file with its size and SHA-256, so a reader can check what it loads
(inference/exported.py does). An export replaces only an earlier export of the same format
holding nothing but its own files: never a run directory, a config, a checkpoint, or anyone's
folder.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from charlm import __version__, strict_json
from charlm import files as disk
from charlm.data.corpora import corpus_kind
from charlm.errors import CharlmError
from charlm.faults import maybe_signal
from charlm.files import publish_folder, write_failure_fix
from charlm.inference.exported import FORMAT_VERSION, ORIGIN, recorded_export
from charlm.inference.trained import TrainedModel


def check_output(output: Path, fmt: str) -> Path:
    """The folder `-o` names, its links resolved, once it may be written: missing, empty, or
    an earlier export in `fmt` (see replaceable)."""
    target = Path(os.path.realpath(output))
    if target.exists() or output.is_symlink():
        replaceable(target, fmt, output)
    if not target.parent.is_dir():
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CharlmError(f"cannot make the folder for -o {output}: {_cause(exc)}") from None
    return target


def replaceable(folder: Path, fmt: str, shown: Path) -> None:
    """Refuse unless `folder` is missing, empty, or an earlier export in `fmt` holding only the
    files its export.json names (a user's file put beside them would be deleted with it)."""
    if not folder.exists():
        if shown.is_symlink():
            raise CharlmError(f"-o {shown} is a link to nothing; name a folder")
        return
    if not folder.is_dir():
        raise CharlmError(f"-o {shown} is a file; name a folder for the export")
    try:
        names = set(os.listdir(folder))
    except OSError as exc:
        raise CharlmError(f"cannot use -o {shown}: {_cause(exc)}") from None
    if not names:
        return
    if ORIGIN not in names or not (folder / ORIGIN).is_file():
        raise CharlmError(f"-o {shown} is a folder with other files in it; name an empty or new folder")
    earlier, files = recorded_export(folder / ORIGIN)
    if earlier != fmt:
        raise CharlmError(f"-o {shown} holds an export in format {earlier}; name another folder for {fmt}")
    others = sorted(names - {ORIGIN, *(files if files is not None else _LEGACY[fmt])})
    if others:
        raise CharlmError(
            f"-o {shown} holds files its export did not write ({', '.join(others[:5])}); "
            "move them out or name another folder"
        )


# The files of exports written before export.json listed them.
_LEGACY = {
    "safetensors": {"model.safetensors", "config.json", "vocab.json", "README.md"},
    "onnx": {"step.onnx", "score.onnx", "onnx.json", "vocab.json", "README.md"},
    "web": {"index.html", "net.js", "app.js", "style.css", "weights.bin", "model.json", "README.md"},
}


def publish_export(output: Path, fmt: str, files: dict[str, bytes | str | dict], origin: dict) -> list[Path]:
    """Write `files` and export.json (naming each with its size and SHA-256) into a new folder
    and swap it in at `output`. Test kill points: export.file (after each file),
    export.before_swap, export.after_swap."""
    data = {name: _encoded(value) for name, value in files.items()}
    origin = origin | {
        "files": {name: {"bytes": len(b), "sha256": hashlib.sha256(b).hexdigest()} for name, b in data.items()}
    }
    data[ORIGIN] = _encoded(origin)  # last
    name = None
    try:
        with publish_folder(output, lambda old: replaceable(old, fmt, output), _fault) as staging:
            for name, value in data.items():
                disk.write_atomic(staging / name, value)
                maybe_signal("export.file")
            name = None
    except OSError as exc:
        raise CharlmError(
            f"could not write {output / name if name else output}: {_cause(exc)}; "
            f"{write_failure_fix(exc, 'free disk space or choose another -o', option='-o')}"
        ) from None
    return [output / name for name in data]


def _fault(point: str) -> None:
    maybe_signal(f"export.{point}")


def _encoded(value: bytes | str | dict) -> bytes:
    if isinstance(value, dict):
        value = strict_json.dumps(value, indent=1, ensure_ascii=True) + "\n"
    return value.encode("utf-8") if isinstance(value, str) else value


def _cause(exc: OSError) -> str:
    return exc.strerror or str(exc)


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
    """export.json: the format version and the run, checkpoint, step and weights exported (the
    publication adds the files)."""
    return {
        "format": FORMAT_VERSION,
        "export": fmt,
        "charlm": __version__,
        "run": str(run),
        "checkpoint": str(trained.path),
        "step": trained.step,
        "weights": trained.weights,
    }
