"""The text search configuration the PostgreSQL log indexes with and searches with (one place for both).

``content.tsv`` is ``setweight(to_tsvector(TS_CONFIG, indexed(prompt)), PROMPT_WEIGHT) ||
setweight(to_tsvector(TS_CONFIG, indexed(answer)), ANSWER_WEIGHT)``, built from the same
``index_text`` FTS5 gets. ``simple`` only lower-cases (no stemming, no stop words), as FTS5's
unicode61 tokenizer does. The rest of unicode61 is ``text.index_words``, in Python, so no
extension (unaccent) is needed: diacritics go (``remove_diacritics 2``), and the words are
the runs of letters and digits, one space apart, so that PostgreSQL's parser sees the words
FTS5 sees (its own would keep ``foo@bar.com``, ``/a/b.py`` or ``3.14`` as one token, and a
search for ``bar`` would miss it). A search folds the user's terms the same way
(``finopsd.log.pg.query``) and passes them through ``to_tsquery(TS_CONFIG, ...)``;
``RANK_WEIGHTS`` (for ``ts_rank``, in the order D, C, B, A) count a match in the answer
twice one in the prompt, like ``bm25(content_fts, 1.0, 2.0)``.

A tsvector holds at most 1 MB, so each side of a piece is indexed from its first
``INDEX_BYTES`` of UTF-8 (a word-dense text that size stays well under the limit).
"""

from __future__ import annotations

from typing import Final

from finopsd.log.text import index_words

TS_CONFIG: Final = "simple"
PROMPT_WEIGHT: Final = "B"
ANSWER_WEIGHT: Final = "A"
RANK_WEIGHTS: Final = "{0, 0, 0.5, 1}"
INDEX_BYTES: Final = 128 << 10


def indexed(text: str | None) -> str:
    """What ``content.tsv`` gets of one side of a piece: its first INDEX_BYTES, as ``index_words``."""
    if text and len(text) > INDEX_BYTES // 4:  # only a long text can be past the bytes
        text = text.encode(errors="replace")[:INDEX_BYTES].decode(errors="ignore")
    return index_words(text)


def tsv_sql(prompt: str, answer: str) -> str:
    """The SQL expression a piece's tsv is built with, from two SQL text expressions of folded text."""
    return (f"setweight(to_tsvector('{TS_CONFIG}', {prompt}), '{PROMPT_WEIGHT}')"
            f" || setweight(to_tsvector('{TS_CONFIG}', {answer}), '{ANSWER_WEIGHT}')")
