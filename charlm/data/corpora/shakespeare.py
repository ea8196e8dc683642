"""tiny-shakespeare, as char-rnn publishes it and nanoGPT splits it.

The file is karpathy/char-rnn's `data/tinyshakespeare/input.txt` (1,115,394 characters, md5
below), the one nanoGPT's `data/shakespeare_char/prepare.py` downloads. nanoGPT's split: the
first 90% of the characters train (1,003,854), the last 10% validate (111,540); there is no
test split. The vocabulary is train's 65 characters (valid has no others).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from charlm.data.corpora import CorpusKind, ProgressFn, register, resolve_data_root
from charlm.data.corpus import Corpus, read_utf8
from charlm.data.vocab import Vocabulary, text_units

if TYPE_CHECKING:
    from charlm.config import DataConfig

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/"
SHAKESPEARE_MD5 = {"input.txt": "6fb458f1232090904fb40fe944165e91"}
TRAIN_FRACTION = 0.9  # nanoGPT's prepare.py: data[:int(n * 0.9)] trains, the rest validates


class TinyShakespeare(CorpusKind):
    name = "shakespeare"
    url = SHAKESPEARE_URL
    files = SHAKESPEARE_MD5

    def load(self, cfg: DataConfig, progress: ProgressFn | None = None, use_cache: bool = True) -> Corpus:
        root = resolve_data_root(cfg.root)
        if self.missing(cfg):  # absent, or not the published bytes
            self.fetch(root, cfg.source, progress)
        units = text_units(read_utf8(self.folder(root) / "input.txt"), self.unit(cfg))  # ASCII: chars are bytes
        cut = int(len(units) * TRAIN_FRACTION)
        vocab = Vocabulary.from_codes(torch.unique(units[:cut]).tolist(), with_unk=False, unit=self.unit(cfg))
        source = str(self.folder(root) / "input.txt")
        return Corpus(vocab, vocab.encode_units(units[:cut], source), vocab.encode_units(units[cut:], source), None)


register(TinyShakespeare())
