"""The search box's FTS5 syntax, as a PostgreSQL ``to_tsquery`` text.

What a user types on SQLite works here the same way, parsed as FTS5 parses it
(https://www.sqlite.org/fts5.html, "Full-text Query Syntax"):

- words and ``"quoted phrases"`` (``""`` is a quote inside one), ``one + two`` a phrase too;
- ``word*`` and ``"a phrase"*``: the last word as a prefix (``'word':*``);
- adjacent phrases must all occur (implicit AND, binding tightest), then ``NOT`` (binary:
  ``a NOT b``), then ``AND``, then ``OR``, left to right; parentheses group. Operators are
  upper case only, as in FTS5: ``and`` is a word;
- ``prompt_text: x`` / ``response_text: x`` / ``{prompt_text response_text}: x`` / ``-prompt_text: x``
  restrict a phrase to the prompt or the answer (the tsvector's weights B and A);
- ``NEAR(a b, 10)`` needs all its phrases in one piece; the distance is not checked
  (tsquery has "exactly N apart", not "within N");
- ``^word`` (first in its column) matches the word anywhere.

Anything else FTS5 rejects is a syntax error here too, and the caller searches the whole
text as a literal phrase, as on SQLite. Words are split and folded as the index folds them
(``index_words``): a phrase's words must be adjacent, like FTS5's tokens.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from finopsd.errors import BadRequest
from finopsd.log.text import index_words

__all__ = ["QuerySyntaxError", "literal", "tsquery"]

MAX_DEPTH: Final = 100  # parentheses deeper than this are searched as a literal phrase (no recursion limit hit)
MAX_WORDS: Final = 4096  # more than a URL (8 KB) can carry; a CLI query past it is refused
COLUMNS: Final = {"prompt_text": "B", "response_text": "A"}  # finopsd.log.pg.text's weights
_TOKENS: Final = re.compile(
    r'\s+|(?P<string>"(?:[^"]|"")*")|(?P<word>[\w\x1a\u0080-\U0010ffff]+)|(?P<punct>[()*+^:{},-])|(?P<bad>.)', re.S)
_OPERATORS: Final = ("AND", "OR", "NOT")

# A tsquery text, or None for an operand that can match nothing (an empty phrase).
Query = str | None


class QuerySyntaxError(ValueError):
    """Text FTS5 would reject: the caller searches it as a literal phrase."""


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for m in _TOKENS.finditer(text):
        kind = m.lastgroup
        if kind is None:
            continue  # whitespace
        value = m.group(kind)
        if kind == "bad" or (kind == "string" and len(value) < 2):
            raise QuerySyntaxError(f"unexpected {value[:1]!r}")
        if kind == "string":
            kind, value = "phrase", value[1:-1].replace('""', '"')
        elif kind == "word":
            kind = value if value in _OPERATORS else "phrase"
        else:
            kind = value  # punctuation is its own kind
        out.append((kind, value))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.at = 0
        self.words = 0
        self.depth = 0

    def peek(self, ahead: int = 0) -> tuple[str, str]:
        i = self.at + ahead
        return self.tokens[i] if i < len(self.tokens) else ("end", "")

    def take(self, kind: str) -> str:
        got, value = self.peek()
        if got != kind:
            raise QuerySyntaxError(f"expected {kind}, got {value or 'the end'!r}")
        self.at += 1
        return value

    def parse(self) -> Query:
        query = self.expr()
        self.take("end")
        return query

    # OR binds loosest, then AND, then NOT; each left to right
    def expr(self) -> Query:
        return self.chain("OR", self.conjunction, _or)

    def conjunction(self) -> Query:
        return self.chain("AND", self.negation, _and)

    def negation(self) -> Query:
        return self.chain("NOT", self.group, _not)

    def chain(self, operator: str, operand: Callable[[], Query], combine: Callable[[Query, Query], Query]) -> Query:
        query = operand()
        while self.peek()[0] == operator:
            self.at += 1
            query = combine(query, operand())
        return query

    def group(self) -> Query:
        if self.peek()[0] == "(":
            self.at += 1
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise QuerySyntaxError("parentheses nested too deep")
            query = self.expr()
            self.take(")")
            self.depth -= 1
            return query
        query = self.term()
        while self.peek()[0] in ("phrase", "^", "{", "-"):
            query = _and(query, self.term())  # implicit AND: adjacent phrases only, as in FTS5
        return query

    def term(self) -> Query:
        weights = self.columns()
        if self.peek() == ("phrase", "NEAR") and self.peek(1)[0] == "(":
            self.at += 2
            query = self.phrase(weights)
            while self.peek()[0] in ("phrase", "^"):
                query = _and(query, self.phrase(weights))
            if self.peek()[0] == ",":
                self.at += 1
                if not self.take("phrase").isdigit():
                    raise QuerySyntaxError("NEAR's distance is a number")
            self.take(")")
            return query
        return self.phrase(weights)

    def columns(self) -> str:
        """The weights a column filter (``col:``, ``{a b}:``, ``-col:``) allows; '' for any."""
        kind, value = self.peek()
        names: set[str]
        if kind == "{":
            self.at += 1
            names = set()
            while self.peek()[0] == "phrase":
                names.add(self.take("phrase"))
            self.take("}")
        elif kind == "-":
            self.at += 1
            names = {self.take("phrase")}
            if names <= set(COLUMNS):
                names = set(COLUMNS) - names
        elif kind == "phrase" and self.peek(1)[0] == ":":
            self.at += 1
            names = {value}
        else:
            return ""
        self.take(":")
        if not names <= set(COLUMNS):
            raise QuerySyntaxError("no such column")
        return "".join(sorted(COLUMNS[n] for n in names)) or "-"

    def phrase(self, weights: str) -> Query:
        if self.peek()[0] == "^":
            self.at += 1  # "first in the column": tsquery cannot say it, the word matches anywhere
        words = index_words(self.take("phrase")).split()
        while self.peek()[0] == "+":
            self.at += 1
            words += index_words(self.take("phrase")).split()
        prefix = self.peek()[0] == "*"
        if prefix:
            self.at += 1
        self.words += len(words)
        if self.words > MAX_WORDS:
            raise BadRequest(f"q: a search of at most {MAX_WORDS} words", param="q")
        if not words or weights == "-":
            return None
        lexemes = [f"'{w}':{weights}" if weights else f"'{w}'" for w in words]
        if prefix:
            lexemes[-1] = f"'{words[-1]}':*{weights}"
        return lexemes[0] if len(lexemes) == 1 else "(" + " <-> ".join(lexemes) + ")"


def _and(a: Query, b: Query) -> Query:
    return None if a is None or b is None else f"({a} & {b})"


def _not(a: Query, b: Query) -> Query:
    return a if a is None or b is None else f"({a} & !{b})"


def _or(a: Query, b: Query) -> Query:
    return b if a is None else a if b is None else f"({a} | {b})"


def tsquery(text: str) -> Query:
    """``text`` (FTS5 syntax) as a ``to_tsquery`` text; None when it can match nothing.
    Raises QuerySyntaxError where FTS5 would reject it."""
    return _Parser(text).parse()


def literal(text: str) -> Query:
    """``text`` as one phrase of all its words (what FTS5 makes of a literal phrase)."""
    return _Parser('"' + text.replace('"', '""') + '"').parse()
