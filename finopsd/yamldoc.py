"""YAML with line numbers: every value keeps its source line, every error names it.

The YAML is composed (not just loaded), so validation can say
``config.yaml:14: providers.groq.kyes: unknown key``.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import yaml


class ConfigError(Exception):
    """A config that cannot be used; the message says where and why."""


# --- reading YAML with line numbers -------------------------------------------------


class Doc:
    """Plain data from YAML plus the source line of every key path."""

    def __init__(self, filename: str, text: str) -> None:
        self.filename = filename
        self.lines: dict[str, int] = {}
        self._scalars = yaml.SafeLoader("")
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"{filename}:{mark.line + 1}" if mark else filename
            raise ConfigError(f"{where}: invalid YAML: {getattr(e, 'problem', e)}") from None
        self.data = self._plain(node, "") if node is not None else {}

    def _plain(self, node: yaml.Node, path: str) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for k, v in node.value:
                key = str(k.value)
                sub = f"{path}.{key}" if path else key
                self.lines[sub] = k.start_mark.line + 1
                out[key] = self._plain(v, sub)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self._plain(v, f"{path}[{i}]") for i, v in enumerate(node.value)]
        return self._scalars.construct_object(node)

    def error(self, path: str, message: str) -> ConfigError:
        probe = path
        while probe and probe not in self.lines:
            probe = probe.rsplit(".", 1)[0] if "." in probe else ""
        line = self.lines.get(probe)
        where = f"{self.filename}:{line}" if line else self.filename
        return ConfigError(f"{where}: {path}: {message}" if path else f"{where}: {message}")


class Reader:
    """Typed access to one mapping of the document; every problem is a located error."""

    def __init__(self, doc: Doc, data: Any, path: str, allowed: set[str]) -> None:
        self.doc, self.path = doc, path
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise doc.error(path, f"must be a mapping, got {kind_of(data)}")
        for key in data:
            if key not in allowed:
                raise doc.error(self.sub(key), "unknown key")
        self.data = data

    def sub(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        if key not in self.data or self.data[key] is None:
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
            raise self.doc.error(self.sub(key), f"must be {_name(kind)}, got {kind_of(value)}")
        return value

    def number(self, key: str, default: float, minimum: float = 0) -> float:
        value = self.get(key, float, default)
        if value < minimum:
            raise self.doc.error(self.sub(key), f"must be at least {minimum}")
        return value

    def strings(self, key: str, default: tuple[str, ...] | None) -> tuple[str, ...] | None:
        value = self.get(key, list, None)
        if value is None:
            return default
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.doc.error(f"{self.sub(key)}[{i}]", f"must be a string, got {kind_of(item)}")
        return tuple(value)

    def secret(self, key: str, env: Mapping[str, str]) -> str | None:
        value = self.get(key, str)
        return None if value is None else resolve_env(value, env, lambda m: self.doc.error(self.sub(key), m))


def resolve_env(value: str, env: Mapping[str, str], error: Callable[[str], Exception]) -> str:
    """``env:NAME`` → the variable's value; anything else is taken literally."""
    if not value.startswith("env:"):
        return value
    name = value[4:]
    if not env.get(name):
        raise error(f"environment variable {name} is not set")
    return env[name]


def kind_of(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false",
             list: "a list", dict: "a mapping"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


