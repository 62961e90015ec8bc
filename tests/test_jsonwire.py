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
