import hashlib

import pytest
import torch

from charlm.config import DataConfig
from charlm.data.corpora.ptb import load_ptb, ptb_char_text
from charlm.data.corpora.text import load_text
from charlm.data.vocab import UNK, Vocabulary
from charlm.errors import DataError

# The derived character files and token counts published in shared/data/ptb/README.md.
DERIVED_MD5 = {
    "train": "874909f99060142f6b88cc74c34baaa2",
    "valid": "9e0fe5bec2a8bf43fd686dc23d5ab8bb",
    "test": "1f9a2d1afe00f76e8bfbe09a65439681",
}
TOKENS = {"train": 5_017_482, "valid": 393_042, "test": 442_423}


@pytest.fixture(scope="module")
def ptb(ptb_root):
    return load_ptb(ptb_root)


def test_ptb_char_matches_the_published_derivation(ptb_root, ptb):
    for split, md5 in DERIVED_MD5.items():
        word_text = (ptb_root / "ptb" / f"ptb.{split}.txt").read_text(encoding="utf-8")
        # The README's rule, verbatim, gives the published char file...
        lines = word_text.splitlines(keepends=True)
        char_file = "".join(" ".join("_".join(line.split())) + " \n " for line in lines)
        assert hashlib.md5(char_file.encode()).hexdigest() == md5
        # ...whose whitespace tokens plus one end-of-line per line are our stream, exactly.
        expected = [tok for line in char_file.split("\n") if line.strip() or False for tok in line.split() + ["\n"]]
        ours = ptb_char_text(word_text)
        assert len(ours) == TOKENS[split] == len(getattr(ptb, split))
        assert list(ours) == expected


def test_ptb_vocabulary(ptb):
    assert len(ptb.vocab) == 50
    assert "\n" in ptb.vocab.tokens and "_" in ptb.vocab.tokens and UNK not in ptb.vocab.tokens
    assert (
        ptb.vocab.decode(ptb.valid[:20].tolist())
        == ptb_char_text(" consumers may want to move their telephones a little closer to the tv set \n")[:20]
    )


def test_encoding_is_vectorised_and_exact():
    vocab = Vocabulary(("b", "a", "\n", "é", UNK))  # not sorted: ids follow the stored order
    ids = vocab.encode("abé\nzé", source="t")
    assert ids.tolist() == [1, 0, 3, 2, 4, 3]
    assert vocab.decode([1, 0, 3]) == "abé"
    assert vocab.unknown_chars("azy") == ["y", "z"]


def test_unknown_characters_without_unk_are_an_error():
    vocab = Vocabulary(("a", "b"))
    with pytest.raises(DataError, match=r"file\.txt contains characters not in the vocabulary: '\{', '~'"):
        vocab.encode("ab{~", source="file.txt")


def test_text_corpus_maps_unseen_characters_to_unk(tmp_path):
    (tmp_path / "train.txt").write_text("hello world\n" * 5, encoding="utf-8")
    (tmp_path / "valid.txt").write_text("hello Zöld\n", encoding="utf-8")
    corpus = load_text(DataConfig(corpus="text", train=str(tmp_path / "train.txt"), valid=str(tmp_path / "valid.txt")))
    assert corpus.vocab.tokens[-1] == UNK
    decoded = [corpus.vocab.tokens[i] for i in corpus.valid.tolist()]
    assert decoded[6:8] == [UNK, UNK] and decoded.count(UNK) == 2  # Z and ö
    assert corpus.test is None


def test_single_file_split_is_contiguous(tmp_path):
    text = "".join(chr(ord("a") + i % 26) for i in range(1000))
    (tmp_path / "all.txt").write_text(text, encoding="utf-8")
    corpus = load_text(DataConfig(corpus="text", path=str(tmp_path / "all.txt"), split=(0.8, 0.1, 0.1)))
    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (800, 100, 100)
    assert corpus.vocab.decode(corpus.valid.tolist()) == text[800:900]


def test_invalid_utf8_names_file_and_offset(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"good text \xff more")
    with pytest.raises(DataError, match=r"bad\.txt is not valid UTF-8: byte offset 10 \(0xff\)"):
        load_text(DataConfig(corpus="text", train=str(bad), valid=str(bad)))


def test_empty_corpus_is_an_error_with_sizes(tmp_path):
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    (tmp_path / "v.txt").write_text("abc", encoding="utf-8")
    with pytest.raises(DataError, match=r"train split .* has 0 characters"):
        load_text(DataConfig(corpus="text", train=str(tmp_path / "empty.txt"), valid=str(tmp_path / "v.txt")))


def test_missing_corpus_file(tmp_path):
    with pytest.raises(DataError, match="corpus file not found"):
        load_text(DataConfig(corpus="text", train=str(tmp_path / "x"), valid=str(tmp_path / "y")))


def test_vocabulary_from_text_is_sorted_and_complete():
    vocab = Vocabulary.from_text("banana\n", with_unk=False)
    assert vocab.tokens == ("\n", "a", "b", "n")
    assert torch.equal(vocab.encode("nab", "t"), torch.tensor([3, 1, 2]))


def test_a_test_split_too_short_to_score_is_caught_before_training(tmp_path):
    (tmp_path / "all.txt").write_text("abcdefghij" * 100 + "k", encoding="utf-8")
    corpus = load_text(DataConfig(corpus="text", path=str(tmp_path / "all.txt"), split=(0.9, 0.1, 0.0)))
    assert corpus.test is None  # the 1-character remainder is no split
    for name, text in (("train", "abcdef" * 10), ("valid", "abc"), ("test", "a")):
        (tmp_path / f"{name}.txt").write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=r"the test split .* has 1 characters"):
        load_text(
            DataConfig(
                corpus="text",
                train=str(tmp_path / "train.txt"),
                valid=str(tmp_path / "valid.txt"),
                test=str(tmp_path / "test.txt"),
            )
        )
