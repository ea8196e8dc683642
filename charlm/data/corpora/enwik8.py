"""enwik8: the first 10^8 bytes of the English Wikipedia dump of 2006-03-03, read as bytes.

The Hutter Prize file, as every byte-level language-modelling paper measures it. It is
published as http://mattmahoney.net/dc/enwik8.zip holding the one member `enwik8` (the URL of
salesforce/awd-lstm-lm's data/enwik8/prep_enwik8.py); the zip is fetched into ROOT/enwik8 and
the member extracted beside it (data/archive.py). The split is prep_enwik8.py's: the last 10M
bytes are valid (the first 5M of them) and test (the last 5M), the 90M before them train;
written here as fractions of the member, so a generated member splits the same way. The
vocabulary is every byte value of all three splits, as AWD-LSTM's data.Corpus builds it (205
for enwik8), with no `<unk>`.

The shared machinery (fetch, extract, split, prepare) is data/zipped.py's `ZippedCorpus`.
"""

from __future__ import annotations

from charlm.data.archive import ZipMember
from charlm.data.corpora import register
from charlm.data.zipped import ZippedCorpus

ENWIK8 = ZipMember(
    url="http://mattmahoney.net/dc/",
    archive="enwik8.zip",
    # 36,445,475 bytes; the SHA-256 in huggingface/datasets datasets/enwik8/dataset_infos.json
    # (download_checksums of http://mattmahoney.net/dc/enwik8.zip). No md5 of the zip is published.
    archive_checksum="sha256:547994d9980ebed1288380d652999f38a14fe291a6247c157c3d33d4932534bc",
    member="enwik8",
    # Matt Mahoney's Large Text Compression Benchmark page (mattmahoney.net/dc/text.html), as
    # quoted in dmlc/gluon-nlp src/gluonnlp/data/corpora/large_text_compression_benchmark.py:
    # "enwik8  100,000,000  a1fa5ffddb56f4953e226637dabbb36a" (md5; SHA-1 57b8363b...).
    member_checksum="a1fa5ffddb56f4953e226637dabbb36a",
    member_size=100_000_000,
)


class Enwik8(ZippedCorpus):
    name = "enwik8"
    spec = ENWIK8
    units = ("byte",)  # the papers read it as bytes (205 values) and report bits per byte


register(Enwik8())
