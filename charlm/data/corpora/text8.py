"""text8: 10^8 characters of Wikipedia cleaned to 27 symbols, the lowercase letters and space.

Matt Mahoney's text8 (mattmahoney.net/dc/textdata.html): enwik9's article text with markup
removed, lowercased, digits spelled out and everything else a space, cut to 10^8 characters.
It is published as http://mattmahoney.net/dc/text8.zip holding the one member `text8`, fetched
and extracted like enwik8, and split like it (the 90M/5M/5M of Mikolov et al. 2012 and the
character-level papers since). Being ASCII it reads the same as characters or bytes; the
vocabulary is the 27 symbols of all three splits, with no `<unk>`.
"""

from __future__ import annotations

from charlm.data.archive import ZipMember
from charlm.data.corpora import register
from charlm.data.zipped import ZippedCorpus

# No md5 of either file is published; the SHA-1s are dmlc/gluon-nlp's, which its Text8 dataset
# (gluonnlp/data/corpora/text8.py) checks when it downloads http://mattmahoney.net/dc/text8.zip.
# The zip's size, 31,344,016 bytes, is the one TensorFlow's word2vec tutorial
# (word2vec_basic.py, maybe_download('text8.zip', 31344016)) checks.
TEXT8 = ZipMember(
    url="http://mattmahoney.net/dc/",
    archive="text8.zip",
    archive_checksum="sha1:6c70299b93b7e1f927b42cd8f6ac1a31547c7a2e",
    member="text8",
    member_checksum="sha1:0dc3edebc970dcc96137e7deda4d9995af9d93de",
    member_size=100_000_000,
)


class Text8(ZippedCorpus):
    name = "text8"
    spec = TEXT8
    units = ("char", "byte")  # ASCII: the same tokens either way


register(Text8())
