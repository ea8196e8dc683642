"""How a prompt is read: as the start of a line, in the model's unit."""

from pathlib import Path

import torch

from charlm.config import load_config
from charlm.data.vocab import Vocabulary
from charlm.inference.sampling_steps import SamplingOptions
from charlm.inference.trained import TrainedModel, encode_prompt, sample_text
from charlm.models.charrnn import CharRNN


def trained_on(tokens: str, unit: str = "char") -> TrainedModel:
    cfg = load_config(
        None,
        [
            "data.corpus=shakespeare",
            f"data.unit={unit}",
            "model.hidden_size=8",
            "model.embedding_dim=4",
            "model.num_layers=1",
        ],
    )
    vocab = Vocabulary(tuple(tokens), unit)
    torch.manual_seed(0)
    return TrainedModel(Path("run"), 0, cfg, vocab, CharRNN(len(vocab), cfg.model))


def test_a_prompt_is_read_after_an_end_of_line():
    # A model never reads a character from a zero state in training (the state carries over);
    # the end-of-line first is where training saw lines begin.
    trained = trained_on("\nAEMOR:")
    assert trained.vocab.decode(encode_prompt(trained, "ROMEO:").tolist()) == "\nROMEO:"
    assert trained.vocab.decode(encode_prompt(trained, "\nROMEO:").tolist()) == "\nROMEO:"  # not twice
    assert trained.vocab.decode(encode_prompt(trained, "").tolist()) == "\n"


def test_without_an_end_of_line_the_prompt_is_read_as_given():
    trained = trained_on("AEMOR: ")  # text8-like: no newline in the vocabulary
    assert trained.vocab.decode(encode_prompt(trained, "ROMEO:").tolist()) == "ROMEO:"


def test_streamed_bytes_come_out_as_whole_characters():
    trained = trained_on("".join(chr(b) for b in "\né€a".encode()), unit="byte")
    pieces: list[str] = []
    sample_text(trained, "a", SamplingOptions(length=200, seed=1), lambda i, text: pieces.append(text))
    streamed = "".join(pieces)
    kept = sample_text(trained, "a", SamplingOptions(length=200, seed=1))[0]
    # The same text streamed or kept: streamed bytes are decoded as UTF-8 as they come, not
    # shown one by one as Latin-1 characters.
    assert streamed == kept
    assert any(ord(c) > 0x7F for c in streamed)  # multi-byte characters were generated
