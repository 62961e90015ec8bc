"""Wire JSON behaves the same with orjson (the fast extra) and with the stdlib fallback."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from finopsd import jsonwire


@pytest.fixture(params=["orjson", "stdlib"])
def wire(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    if request.param == "stdlib":
        monkeypatch.setitem(sys.modules, "orjson", None)  # import orjson → ImportError
    yield importlib.reload(jsonwire)
    monkeypatch.undo()
    importlib.reload(jsonwire)


def test_round_trip_is_compact_utf8(wire: Any) -> None:
    value = {"model": "gpt-5", "messages": [{"role": "user", "content": "héllo \u2603"}], "n": 1, "t": 0.5}
    raw = wire.dumps(value)
    assert isinstance(raw, bytes) and b": " not in raw and "☃".encode() in raw
    assert wire.loads(raw) == value and wire.loads(raw.decode()) == value


def test_bad_input_is_a_value_error(wire: Any) -> None:
    for bad in (b"{", b"[1,]", b"\xff"):
        with pytest.raises(ValueError):
            wire.loads(bad)


def test_both_paths_refuse_what_the_gateway_could_not_write_back(wire: Any) -> None:
    limit = wire.MAX_DEPTH
    assert wire.loads(b"[" * limit + b"]" * limit) is not None
    for bad in (b"[" * (limit + 1) + b"]" * (limit + 1), b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}",
                b'{"a": NaN}', b"[Infinity]", b'{"a": 1e400}', b'{"a": -1e400}', b'{"a": "\\ud800"}',
                b'{"a": "x\\udc00"}', '{"a": "é"}'.encode("utf-16"), b'{"a": "\xff"}'):
        with pytest.raises(ValueError):
            wire.loads(bad)
        with pytest.raises(ValueError):
            wire.loads(bad.decode("utf-8", "replace") if b"\xff" not in bad else bad)
    assert wire.loads(b'{"a": "\\ud83d\\ude00"}') == {"a": "\U0001f600"}  # a whole pair is fine
    big = wire.loads(b'{"n": 99999999999999999999999}')["n"]
    assert big == 99999999999999999999999 or big == 1e23  # the stdlib keeps the int, orjson a float
    wire.dumps(big)  # and either can be written back


def test_a_big_document_is_walked_for_its_depth_too(wire: Any) -> None:
    """Past COUNT_BELOW the bracket count is skipped; the depth limit holds the same."""
    limit, pad = wire.MAX_DEPTH, b'"' + b"x" * wire.COUNT_BELOW + b'"'
    assert wire.loads(b'{"pad": ' + pad + b', "a": ' + b"[" * (limit - 1) + b"]" * (limit - 1) + b"}")["pad"]
    for depth in (limit, 5000):
        with pytest.raises(ValueError):
            wire.loads(b'{"pad": ' + pad + b', "a": ' + b"[" * depth + b"]" * depth + b"}")


def test_a_wide_document_is_not_taken_for_a_deep_one(wire: Any) -> None:
    wide = b"[" + b",".join([b"[[]]"] * 1000) + b"]"
    assert len(wire.loads(wide)) == 1000
    assert wire.loads('{"code": "' + "[" * 500 + '"}') == {"code": "[" * 500}  # brackets in a string
