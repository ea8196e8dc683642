"""Shared fixtures: the local PTB copy, tiny corpora and tiny configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# The offline copy of PTB that developers and CI have beside the checkout; override with
# CHARLM_PTB_SOURCE.
SHARED_PTB = Path(os.environ.get("CHARLM_PTB_SOURCE", REPO.parent / "shared" / "data" / "ptb"))


@pytest.fixture(scope="session")
def shared_ptb() -> Path:
    if not (SHARED_PTB / "ptb.train.txt").is_file():
        pytest.skip(f"no local PTB copy at {SHARED_PTB} (set CHARLM_PTB_SOURCE)")
    return SHARED_PTB


@pytest.fixture(scope="session")
def ptb_root(shared_ptb, tmp_path_factory) -> Path:
    """A data root holding verified PTB files, fetched once per session from the local copy."""
    from charlm.download import fetch_ptb

    root = tmp_path_factory.mktemp("data")
    fetch_ptb(root, str(shared_ptb))
    return root


SAMPLE_TEXT = (
    "the quick brown fox jumps over the lazy dog.\n"
    "a stitch in time saves nine; all that glitters is not gold.\n"
    "to be or not to be, that is the question.\n"
) * 40


def write_text_corpus(folder: Path) -> dict[str, Path]:
    """A small English corpus as train/valid/test files in `folder`."""
    paths = {}
    for split, text in (("train", SAMPLE_TEXT), ("valid", SAMPLE_TEXT[:800]), ("test", SAMPLE_TEXT[800:1600])):
        paths[split] = folder / f"{split}.txt"
        paths[split].write_text(text, encoding="utf-8")
    return paths


@pytest.fixture
def text_files(tmp_path) -> dict[str, Path]:
    return write_text_corpus(tmp_path)


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def tiny_text_config(text_files: dict[str, Path], **train) -> dict:
    """A one-layer, 16-unit model on the small text corpus: a few steps take milliseconds."""
    return {
        "data": {"corpus": "text", **{k: str(v) for k, v in text_files.items()}},
        "model": {"cell": "lstm", "embedding_dim": 8, "hidden_size": 16, "num_layers": 1},
        "train": {"batch_size": 4, "seq_len": 16, "max_steps": 20, "lr": 1e-2, "eval_every": 10,
                  "log_every": 5, "eval_batch_size": 4, "test_batch_size": 4, "device": "cpu",
                  "seed": 7, **train},
    }


@pytest.fixture
def tiny_config(tmp_path, text_files) -> Path:
    return write_config(tmp_path / "tiny.yaml", tiny_text_config(text_files))
