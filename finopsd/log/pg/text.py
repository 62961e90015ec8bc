"""The text search configuration the PostgreSQL log indexes with and searches with (one place for both).

``content.tsv`` is ``setweight(to_tsvector(TS_CONFIG, fold(prompt)), PROMPT_WEIGHT) ||
setweight(to_tsvector(TS_CONFIG, fold(answer)), ANSWER_WEIGHT)``, built from the same
``index_text`` FTS5 gets. ``simple`` only lower-cases (no stemming, no stop words), as FTS5's
unicode61 tokenizer does. The rest of unicode61 is ``fold``, in Python, so no extension
(unaccent) is needed: diacritics go (``remove_diacritics 2``), and every run of characters
that are not letters or digits becomes one space, so that PostgreSQL's parser sees the words
FTS5 sees (its own would keep ``foo@bar.com``, ``/a/b.py`` or ``3.14`` as one token, and a
search for ``bar`` would miss it). A search folds the user's terms the same way (a term that
folds to several words is a phrase of them) and passes them through ``to_tsquery(TS_CONFIG,
...)``; ``RANK_WEIGHTS`` (for ``ts_rank``, in the order D, C, B, A) count a match in the
answer twice one in the prompt, like ``bm25(content_fts, 1.0, 2.0)``.

A tsvector holds at most 1 MB, so each side of a piece is indexed from its first
``INDEX_BYTES`` of UTF-8 (a word-dense text that size stays well under the limit).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Final

TS_CONFIG: Final = "simple"
PROMPT_WEIGHT: Final = "B"
ANSWER_WEIGHT: Final = "A"
RANK_WEIGHTS: Final = "{0, 0, 0.5, 1}"
INDEX_BYTES: Final = 128 << 10


SEPARATORS: Final = re.compile(r"[\W_]+")  # what unicode61 splits on: all but letters and digits


def fold(text: str | None) -> str:
    """``text`` as FTS5's tokenizer reads it: words of letters and digits, one space apart, without
    diacritics (é -> e); cut to INDEX_BYTES."""
    if not text:
        return ""
    data = text.encode(errors="replace")
    if len(data) > INDEX_BYTES:
        text = data[:INDEX_BYTES].decode(errors="ignore")
    if not text.isascii():
        text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return SEPARATORS.sub(" ", text).strip()




def tsv_sql(prompt: str, answer: str) -> str:
    """The SQL expression a piece's tsv is built with, from two SQL text expressions of folded text."""
    return (f"setweight(to_tsvector('{TS_CONFIG}', {prompt}), '{PROMPT_WEIGHT}')"
            f" || setweight(to_tsvector('{TS_CONFIG}', {answer}), '{ANSWER_WEIGHT}')")
