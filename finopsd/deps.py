"""What a config needs installed, and what to tell the user when it is not.

Adapters and the MCP SDK are imported on first use (botocore and google-auth cost memory
that a gateway without Bedrock or Vertex should not pay), so a broken install would first
show as a failed request. ``finopsd check`` imports them up front (``missing``), and a
request that still meets one gets the same sentence (``MissingDependency``).
"""

from __future__ import annotations

import importlib.metadata
import re
from importlib import import_module
from typing import TYPE_CHECKING, Any, Final

from finopsd.errors import GatewayError
from finopsd.providers.registry import ADAPTER_CLASSES

if TYPE_CHECKING:
    from finopsd.config import Config

# what finopsd.mcp_upstream and finopsd.routes.mcp import from the SDK when /mcp is first used
MCP_SDK_MODULES: Final = ("mcp", "mcp.client.sse", "mcp.client.streamable_http", "mcp.shared.exceptions",
                          "mcp.shared.inbound", "mcp_types", "mcp_types.version", "httpx2")
# import names whose distribution is named differently (a missing one cannot be looked up)
DISTRIBUTIONS: Final = {"google": "google-auth", "yaml": "pyyaml"}


class MissingDependency(GatewayError):
    """A module finopsd needs could not be imported: the install is incomplete."""

    def __init__(self, what: str, error: ImportError) -> None:
        super().__init__(f"{what} cannot load: {explain(error)}", status=500, code="missing_dependency")


def adapter_class(protocol: str) -> type[Any]:
    """The adapter class serving ``protocol``, imported now if it was not yet."""
    module, cls = ADAPTER_CLASSES[protocol]
    try:
        return getattr(import_module(f"finopsd.providers.{module}"), cls)  # type: ignore[no-any-return]
    except ImportError as e:
        raise MissingDependency(f"the {protocol} adapter", e) from e


def missing(config: Config) -> list[str]:
    """One sentence per module the config's providers and MCP servers need that does not import."""
    problems: list[str] = []
    for protocol in sorted({p.type for p in config.providers.values()}):
        try:
            adapter_class(protocol)
        except MissingDependency as e:
            users = sorted(n for n, p in config.providers.items() if p.type == protocol)
            problems.append(f"provider {', '.join(users)}: {e.message}")
    if config.mcp.servers:
        for module in MCP_SDK_MODULES:
            try:
                import_module(module)
            except ImportError as e:
                problems.append(f"mcp.servers: the MCP SDK ({module}) cannot load: {explain(e)}")
                break
    return problems


def explain(error: ImportError) -> str:
    """'No module named X' and the pip command that brings X, from the error or what caused it."""
    name = _missing_name(error)
    if name is None:  # not a missing module (a broken one): its own words are all we have
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    return (f"no module named {name!r}; the install is incomplete: "
            f"pip install '{_requirement_for(name.partition('.')[0])}' (or reinstall finopsd)")


def _missing_name(error: BaseException | None) -> str | None:
    seen = 0
    while error is not None and seen < 10:  # google-auth wraps the ModuleNotFoundError in its own ImportError
        if isinstance(error, ModuleNotFoundError) and error.name:
            return error.name
        error, seen = error.__cause__ or error.__context__, seen + 1
    return None


def _requirement_for(top: str) -> str:
    """finopsd's own requirement that brings the distribution providing ``top``, else its name.

    Either the requirement names it, or one of the extras it asks for does: ``packaging``
    comes with ``google-auth[urllib3]``.
    """
    dist = DISTRIBUTIONS.get(top, top)
    wanted = _normalise(dist)
    for spec, name, extras in _requirements("finopsd"):
        if name == wanted:
            return spec
        if any(sub == wanted and sub_extras & extras for sub, sub_extras in _extra_requirements(name)):
            return spec
    return dist


def _requirements(dist: str) -> list[tuple[str, str, set[str]]]:
    """(requirement as written, normalised name, extras asked for) of ``dist``'s unconditional needs."""
    out = []
    for req in _requires(dist):
        spec, _, marker = (part.strip() for part in req.partition(";"))
        match = re.match(r"([A-Za-z0-9._-]+)\s*(?:\[([^\]]*)\])?", spec)
        if match and not marker:
            extras = {e.strip() for e in (match.group(2) or "").split(",") if e.strip()}
            out.append((spec.replace(" ", ""), _normalise(match.group(1)), extras))
    return out


def _extra_requirements(dist: str) -> list[tuple[str, set[str]]]:
    """(normalised name, extras that bring it) of ``dist``'s needs that only an extra brings."""
    out = []
    for req in _requires(dist):
        match = re.match(r"[A-Za-z0-9._-]+", req)
        extras = set(re.findall(r"extra\s*==\s*['\"]([^'\"]+)['\"]", req.partition(";")[2]))
        if match and extras:
            out.append((_normalise(match.group()), extras))
    return out


def _requires(dist: str) -> list[str]:
    try:
        return importlib.metadata.requires(dist) or []
    except importlib.metadata.PackageNotFoundError:  # finopsd run from a checkout, or dist missing too
        return []


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
