"""tiny-shakespeare on the real file: fetched from the local copy with its md5, nanoGPT's split,
and a run trained, evaluated and sampled on it."""

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from charlm.config import DataConfig, load_config
from charlm.data.corpora import corpus_kind, load_corpus
from charlm.errors import DownloadError
from tests.conftest import REPO, cli, write_config

SHARED = Path(os.environ.get("CHARLM_SHAKESPEARE_SOURCE", REPO.parent / "shared" / "data" / "shakespeare"))


@pytest.fixture(scope="module")
def shakespeare_root(tmp_path_factory) -> Path:
    if not (SHARED / "input.txt").is_file():
        pytest.skip(f"no local tiny-shakespeare copy at {SHARED} (set CHARLM_SHAKESPEARE_SOURCE)")
    root = tmp_path_factory.mktemp("data")
    folder, fetched = corpus_kind("shakespeare").fetch(root, str(SHARED))
    assert fetched == ["input.txt"] and folder == root / "shakespeare"
    return root


def test_nanogpts_split_and_vocabulary(shakespeare_root):
    corpus = load_corpus(DataConfig(corpus="shakespeare", root=str(shakespeare_root)))
    assert (len(corpus.train), len(corpus.valid), corpus.test) == (1_003_854, 111_540, None)
    assert len(corpus.vocab) == 65 and corpus.vocab.unk_id is None
    text = (shakespeare_root / "shakespeare" / "input.txt").read_text()
    assert corpus.vocab.decode(corpus.valid[:40].tolist()) == text[1_003_854:1_003_894]


def test_a_copy_with_other_bytes_is_refused(tmp_path):
    if not (SHARED / "input.txt").is_file():
        pytest.skip("no local tiny-shakespeare copy")
    changed = tmp_path / "mirror"
    changed.mkdir()
    data = bytearray((SHARED / "input.txt").read_bytes())
    data[100] ^= 1
    (changed / "input.txt").write_bytes(bytes(data))
    with pytest.raises(
        DownloadError, match=f"expected 6fb458f1232090904fb40fe944165e91, got {hashlib.md5(data).hexdigest()}"
    ):
        corpus_kind("shakespeare").fetch(tmp_path / "data", str(changed))
    assert not (tmp_path / "data" / "shakespeare" / "input.txt").exists()


def test_the_corpus_reads_its_own_files(tmp_path):
    from charlm.errors import ConfigError

    with pytest.raises(ConfigError, match="corpus 'shakespeare' reads its own files; remove data.train"):
        load_config(write_config(tmp_path / "c.yaml", {"data": {"corpus": "shakespeare", "train": "x.txt"}}))


def test_train_eval_sample_on_tiny_shakespeare(shakespeare_root, tmp_path):
    config = write_config(
        tmp_path / "s.yaml",
        {
            "data": {"corpus": "shakespeare", "root": str(shakespeare_root)},
            "model": {"embedding_dim": 8, "hidden_size": 16, "num_layers": 1},
            "train": {
                "batch_size": 4,
                "seq_len": 16,
                "max_steps": 6,
                "eval_every": 6,
                "log_every": 3,
                "eval_batch_size": 256,
                "device": "cpu",
                "threads": 1,
                "warmup_steps": 0,
            },
        },
    )
    trained = cli("train", "--config", config, "--out-dir", tmp_path / "run", check=0)
    assert "111,539 tokens" in trained.stderr  # the whole valid split, every prediction once
    assert (tmp_path / "run" / "best.pt").is_file()
    assert "no test split" in cli("eval", tmp_path / "run", check=1).stderr
    sample = cli("sample", tmp_path / "run", "--prompt", "ROMEO:", "--length", "20", "--seed", "1", check=0)
    assert sample.stdout.startswith("ROMEO:") and len(sample.stdout) == 6 + 20 + 1
    shutil.rmtree(tmp_path / "run")


def test_data_fetch_shakespeare_from_a_local_copy(tmp_path):
    if not (SHARED / "input.txt").is_file():
        pytest.skip("no local tiny-shakespeare copy")
    fetched = cli("data", "fetch", "shakespeare", "--source", SHARED, "--root", tmp_path, check=0)
    assert f"fetched input.txt into {tmp_path / 'shakespeare'} (checksums verified)" in fetched.stdout
    again = cli("data", "fetch", "shakespeare", "--source", SHARED, "--root", tmp_path, check=0)
    assert "already holds the shakespeare files" in again.stdout
