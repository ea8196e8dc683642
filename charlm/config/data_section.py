"""The data section of the config: which corpus, in which unit, and where it lives."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from charlm.config.section import _Section
from charlm.errors import quote


class DataConfig(_Section):
    """Which corpus to train on and where it lives."""

    corpus: Literal["ptb", "text", "shakespeare", "enwik8", "text8"] = Field(
        "ptb",
        description="The corpus: PTB-char, tiny-shakespeare, enwik8, text8 (each fetched from its canonical URL "
        "and checked), or text: your own files.",
    )
    unit: Literal["char", "byte"] | None = Field(
        None,
        description="What one token is: a character (a Unicode code point of UTF-8 text) or a byte (what enwik8 "
        "is measured in, and what makes a file of any encoding trainable). Null: the corpus's own unit (byte "
        "for enwik8, char for the others).",
    )
    root: str | None = Field(
        None, description="Directory holding the corpus cache (PTB lands in ROOT/ptb). Default: $CHARLM_DATA or ./data."
    )
    source: str | None = Field(
        None,
        description="Where `charlm train` fetches the corpus from when it is missing: a local directory or a "
        "mirror URL. Default (null): the canonical URLs.",
    )
    train: str | None = Field(None, description="corpus: text -- the training file (with valid, and optionally test).")
    valid: str | None = Field(None, description="corpus: text -- the validation file.")
    test: str | None = Field(None, description="corpus: text -- the test file (optional).")
    path: str | None = Field(
        None, description="corpus: text -- or one file, cut into contiguous train/valid/test parts by split."
    )
    split: tuple[float, float, float] = Field(
        (0.9, 0.05, 0.05), description="corpus: text with path -- the train/valid/test fractions, summing to 1."
    )

    @field_validator("root", "source", "train", "valid", "test", "path")
    @classmethod
    def _check_place(cls, value: str | None, info: ValidationInfo) -> str | None:
        from charlm.data.fetch import (
            source_problem,  # a mirror URL's form: scheme, host, port
        )

        if value is not None and "\0" in value:
            raise ValueError(f"{quote(value)} holds a NUL character, which no file name can hold")
        if value is not None and info.field_name == "source" and (problem := source_problem(value)):
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _check_files(self) -> DataConfig:
        # Each corpus judges its own keys (data/corpora/). The registries are imported when a
        # config is validated, not with this module: they import torch, and the schema stays
        # importable without it (the sections' defaults are built on use, not at import).
        from charlm.data.corpora import corpus_kind

        problems = corpus_kind(self.corpus).config_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        if any(not 0 <= f < 1 for f in self.split) or abs(sum(self.split) - 1) > 1e-6:
            raise ValueError(f"data.split must be three fractions in [0, 1) summing to 1, got {list(self.split)}")
        if self.split[0] <= 0 or self.split[1] <= 0:
            raise ValueError(f"data.split needs train and valid fractions above 0, got {list(self.split)}")
        return self
