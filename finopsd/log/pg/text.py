"""The text search configuration the PostgreSQL log indexes with and searches with (one place for both).

``content.tsv`` is ``setweight(to_tsvector(TS_CONFIG, fold(prompt)), PROMPT_WEIGHT) ||
setweight(to_tsvector(TS_CONFIG, fold(answer)), ANSWER_WEIGHT)``, built from the same
``index_text`` FTS5 gets. ``simple`` only lower-cases (no stemming, no stop words), which is
what FTS5's unicode61 tokenizer does; its ``remove_diacritics 2`` is ``fold`` here, in Python,
so no extension (unaccent) is needed. A search folds the user's terms the same way and passes
them through ``to_tsquery(TS_CONFIG, ...)``; ``RANK_WEIGHTS`` (for ``ts_rank``, in the order
D, C, B, A) count a match in the answer twice one in the prompt, like ``bm25(content_fts, 1.0, 2.0)``.

A tsvector holds at most 1 MB, so each side of a piece is indexed from its first
``INDEX_BYTES`` of UTF-8 (a word-dense text that size stays well under the limit).
"""

from __future__ import annotations

import unicodedata
from typing import Final

TS_CONFIG: Final = "simple"
PROMPT_WEIGHT: Final = "B"
ANSWER_WEIGHT: Final = "A"
RANK_WEIGHTS: Final = "{0, 0, 0.5, 1}"
INDEX_BYTES: Final = 128 << 10


def fold(text: str | None) -> str:
    """``text`` without its diacritics (é -> e, as unicode61's remove_diacritics 2), cut to INDEX_BYTES."""
    if not text:
        return ""
    if not text.isascii():
        text = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    data = text.encode()
    return text if len(data) <= INDEX_BYTES else data[:INDEX_BYTES].decode(errors="ignore")




def tsv_sql(prompt: str, answer: str) -> str:
    """The SQL expression a piece's tsv is built with, from two SQL text expressions of folded text."""
    return (f"setweight(to_tsvector('{TS_CONFIG}', {prompt}), '{PROMPT_WEIGHT}')"
            f" || setweight(to_tsvector('{TS_CONFIG}', {answer}), '{ANSWER_WEIGHT}')")
