"""``GET /openapi.json``: an OpenAPI 3.1 description of the public endpoints.

It documents what the gateway itself checks; request fields it passes through
to the upstream are allowed (``additionalProperties: true``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from finopsd import __version__, access

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        }
    },
}

MESSAGE = {
    "type": "object",
    "required": ["role"],
    "properties": {
        "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
        "content": {"type": ["string", "array", "null"]},
        "tool_calls": {"type": "array"},
        "tool_call_id": {"type": "string"},
    },
    "additionalProperties": True,
}

CHAT_REQUEST = {
    "type": "object",
    "required": ["model", "messages"],
    "properties": {
        "model": {"type": "string", "description": "provider/model, an alias, or a bare name"},
        "messages": {"type": "array", "items": MESSAGE},
        "stream": {"type": "boolean"},
        "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
        "tools": {"type": "array"},
        "fallbacks": {"type": "array", "items": {"type": "string"}, "description": "tried in order on failure"},
    },
    "additionalProperties": True,
}

PASSTHROUGH_REQUEST = {
    "type": "object",
    "required": ["model"],
    "properties": {"model": {"type": "string"}, "stream": {"type": "boolean"}},
    "additionalProperties": True,
}


GOOGLE_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message", "status"], "properties": {
        "code": {"type": "integer"}, "message": {"type": "string"},
        "status": {"type": "string", "description": "INVALID_ARGUMENT, UNAUTHENTICATED, PERMISSION_DENIED, "
                                                    "RESOURCE_EXHAUSTED, NOT_FOUND, UNAVAILABLE, …"}}}},
}


def _errors(*statuses: int, schema: str = "Error") -> dict[str, Any]:
    content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}
    return {str(s): {"description": "error", "content": content} for s in statuses}


def _post(summary: str, schema: dict[str, Any], *statuses: int, error: str = "Error") -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
            "responses": {
                "200": {
                    "description": "the answer; `text/event-stream` when `stream` is true",
                    "content": {"application/json": {}, "text/event-stream": {}},
                },
                **_errors(*statuses, schema=error),
            },
        }
    }


def document() -> dict[str, Any]:
    chat = _post("Chat completion (OpenAI dialect), streamed or not", CHAT_REQUEST,
                 400, 401, 402, 403, 413, 429, 500, 501, 502, 503, 504)
    passthrough = _post("Forwarded to OpenAI-protocol providers", PASSTHROUGH_REQUEST, 400, 413, 502, 504)
    models = {"get": {"summary": "Models as provider/model ids", "responses": {"200": {"description": "list"}}}}
    paths: dict[str, Any] = {"/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "ok"}}}}}
    for prefix in ("/openai", "/openai/v1", "/v1"):
        paths[f"{prefix}/chat/completions"] = chat
        paths[f"{prefix}/models"] = models
        paths[f"{prefix}/embeddings"] = passthrough
        paths[f"{prefix}/completions"] = passthrough
    paths["/anthropic/v1/messages"] = _post(
        "Anthropic Messages dialect (Claude Code): native to Anthropic, translated elsewhere",
        {"type": "object", "required": ["model", "messages"], "additionalProperties": True,
         "properties": {"model": {"type": "string"}, "messages": {"type": "array"}, "stream": {"type": "boolean"},
                        "max_tokens": {"type": "integer"}}},
        400, 401, 402, 403, 413, 429, 500, 502, 503, 504)
    genai_body = {"type": "object", "required": ["contents"], "additionalProperties": True,
                  "properties": {"contents": {"type": "array"}, "systemInstruction": {"type": "object"},
                                 "tools": {"type": "array"}, "generationConfig": {"type": "object"}}}
    model_param = {"name": "model", "in": "path", "required": True, "schema": {"type": "string"},
                   "description": "provider/model, an alias, a gemini.model_map name, or a bare Gemini name"}
    key_param = {"name": "key", "in": "query", "schema": {"type": "string"},
                 "description": "the virtual key, as Gemini clients may send it (else x-goog-api-key or Bearer)"}
    for version in ("v1beta", "v1"):
        base = f"/genai/{version}/models"
        for method, summary in (
            ("generateContent", "Gemini API dialect (Gemini CLI, google-genai): native to Gemini and Vertex, "
                                "translated elsewhere"),
            ("streamGenerateContent", "The same, streamed: SSE with alt=sse, else one JSON array"),
            ("countTokens", "Exact for Gemini providers, an estimate for others"),
        ):
            op = _post(summary, genai_body, 400, 401, 402, 403, 404, 413, 429, 500, 502, 503, 504,
                       error="GoogleError")
            op["post"]["parameters"] = [model_param, key_param] + (
                [{"name": "alt", "in": "query", "schema": {"type": "string", "enum": ["sse"]}}]
                if method == "streamGenerateContent" else [])
            paths[f"{base}/{{model}}:{method}"] = op
        paths[base] = {"get": {"summary": "Models as Gemini Model resources (models/provider/model)",
                               "parameters": [key_param], "responses": {"200": {"description": "models"}}}}
        paths[f"{base}/{{model}}"] = {"get": {"summary": "One model", "parameters": [model_param, key_param],
                                              "responses": {"200": {"description": "the model"},
                                                            **_errors(401, 404, schema="GoogleError")}}}
    paths["/mcp"] = {
        "post": {"summary": "MCP Streamable HTTP endpoint: JSON-RPC (tools/list, tools/call, …) for the tools "
                            "of the configured MCP servers, filtered per key",
                 "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
                 "responses": {"200": {"description": "JSON-RPC result, as JSON or an SSE stream",
                                       "content": {"application/json": {}, "text/event-stream": {}}},
                               **_errors(400, 401, 404)}},
        "delete": {"summary": "End an MCP session", "responses": {"200": {"description": "ended"}}},
    }
    def admin_get(summary: str, parameters: list[dict[str, Any]], answer: str, *statuses: int) -> dict[str, Any]:
        return {"get": {"summary": summary, "parameters": parameters, "security": [{"bearer": []}],
                        "responses": {"200": {"description": answer}, **_errors(*statuses)}}}

    def strings(*names: str) -> list[dict[str, Any]]:
        return [{"name": n, "in": "query", "schema": {"type": "string"}} for n in names]

    path_id = [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]
    shared = ("q", "provider", "model", "key", "team", "status", "since", "until", "min_cost", "limit", "cursor",
              "totals")  # fmt: skip
    paths["/api/logs"] = admin_get("Search request logs (admin)",
                                   strings(*shared, "stream", "min_latency_ms", "order", "preview"),
                                   "items, next_cursor, totals", 400, 401, 403)
    paths["/api/logs/{id}"] = admin_get("One logged request with its conversation (admin)", path_id,
                                        "the row", 401, 403, 404)
    paths["/api/sessions"] = admin_get(
        "Agent sessions (one task each), newest-active first; a filter matches a session with a request that"
        " matches it; status is ok, error or running (admin)", strings(*shared),
        "items (sessions; with q each carries the match: request_id, turn, snippet), next_cursor, totals",
        400, 401, 403)
    paths["/api/sessions/{id}"] = admin_get(
        "One session: its summary and its turns, each with only the messages it added, the answer,"
        " tokens, cost and latency (admin)", path_id, "session, turns", 401, 403, 404)
    paths.update(key_admin_paths())
    paths["/api/usage"] = admin_get(
        "Usage over time from the roll-ups (admin): per hour or day and per team, key, model or provider,"
        " each metric as a series and a total (requests, errors, client_closed, prompt/cached/completion tokens,"
        " cost_usd, cost_without_cache_usd, error_rate, latency and ttft p50/p95 in ms, within -8%/+9%),"
        " the error types, and each budget's burn-down with its projected run-out time",
        [{"name": "range", "in": "query", "schema": {"type": "string", "enum": ["24h", "7d", "30d", "custom"]}},
         {"name": "grain", "in": "query", "schema": {"type": "string", "enum": ["hour", "day"]}},
         {"name": "group_by", "in": "query", "schema": {"type": "string", "enum": ["team", "key", "model", "provider"]}},
         *strings("since", "until", "team", "key", "model", "provider", "metric")],
        "grain, since, until, buckets (UTC starts), group_by, filters, metrics, groups [{name, totals, series,"
        " error_types}], all {totals, series, error_types}, budgets", 400, 401, 403)
    return {
        "openapi": "3.1.0",
        "info": {"title": "finopsd", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR, "GoogleError": GOOGLE_ERROR, "ChatRequest": CHAT_REQUEST},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


KEY_FIELDS: dict[str, Any] = {
    "team": {"type": ["string", "null"]},
    "models": {"type": ["array", "null"], "items": {"type": "string"}, "description": "globs over provider/model"},
    "mcp_tools": {"type": ["array", "null"], "items": {"type": "string"}},
    "rate_limit": {"type": "object", "properties": {"requests_per_minute": {"type": "integer", "minimum": 1},
                                                    "tokens_per_minute": {"type": "integer", "minimum": 1}}},
    "budgets": {"type": "array", "items": {"type": "object", "required": ["usd", "period"], "properties": {
        "usd": {"type": "number", "minimum": 0},
        "period": {"enum": ["minute", "hour", "day", "week", "month", "total"]}}}},
    "expires": {"type": ["string", "null"], "description": "2027-01-01 or 2027-01-01T12:00:00Z"},
    "enabled": {"type": "boolean"},
    "caching": {"type": "object", "properties": {"auto": {"type": "boolean"}, "ttl": {"enum": ["5m", "1h"]}}},
    "description": {"type": ["string", "null"]},
    "owner": {"type": ["string", "null"]},
}
TEAM_FIELDS: dict[str, Any] = {k: KEY_FIELDS[k] for k in ("rate_limit", "budgets", "caching", "description", "owner")}


def key_admin_paths() -> dict[str, Any]:
    """The admin API of ``finopsd.routes.keyadmin``."""
    name = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
    if_match = [{"name": "If-Match", "in": "header", "schema": {"type": "string"},
                 "description": "the ETag last read (\"v3\"): 409 if the entry changed since"}]

    def op(summary: str, ok: str, *statuses: int, body: dict[str, Any] | None = None,
           params: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"summary": summary, "security": [{"bearer": []}], "parameters": params or [],
                               "responses": {ok.split(" ", 1)[0]: {"description": ok.split(" ", 1)[1]},
                                             **_errors(*statuses)}}
        if body is not None:
            out["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
        return out

    paths: dict[str, Any] = {}
    for plural, kind, fields in (("keys", "key", KEY_FIELDS), ("teams", "team", TEAM_FIELDS)):
        create_body = {"type": "object", "required": ["name"], "additionalProperties": False,
                       "properties": {"name": {"type": "string", "maxLength": 128}, **fields}}
        made = "201 the key, its secret (shown only here) and a Roo Code profile" if kind == "key" else "201 the team"
        paths[f"/api/{plural}"] = {"post": op(f"Make a {kind} (admin; stored in the database)", made,
                                              400, 401, 403, 409, 422, body=create_body)}
        paths[f"/api/{plural}/{{name}}"] = {
            "get": op(f"One {kind}: definition, source (config | dashboard), version, usage (admin)",
                      f"200 the {kind}", 401, 403, 404, params=name),
            "patch": op(f"Change the fields given of a dashboard {kind} (admin)", f"200 the {kind}",
                        400, 401, 403, 404, 409, 422, params=name + if_match,
                        body={"type": "object", "additionalProperties": False, "properties": fields}),
            "delete": op(f"Delete a dashboard {kind}: refused at once; spend and log rows stay (admin)",
                         "200 deleted", 401, 403, 404, 409, params=name + if_match),
        }
    paths["/api/keys"]["get"] = op("Keys and teams with spend per budget, rate, source and version (admin)",
                                   "200 time, auth_required, keys, teams", 401, 403)
    paths["/api/teams"]["get"] = op("Teams: the config file's and the dashboard's (admin)", "200 teams", 401, 403)
    paths["/api/keys/{name}/rotate"] = {"post": op(
        "A new secret for a dashboard key; the old one stops at once or after grace_seconds (admin)",
        "200 the key and its new secret (shown only here)", 401, 403, 404, 409, 422, params=name + if_match,
        body={"type": "object", "properties": {"grace_seconds": {"type": "number", "minimum": 0}}})}
    paths["/api/audit"] = {"get": op(
        "Every change to keys and teams, newest first: time, actor, client_ip, action, before, after (admin)",
        "200 items, next_before", 400, 401, 403,
        params=[{"name": "limit", "in": "query", "schema": {"type": "integer", "maximum": 500}},
                {"name": "before", "in": "query", "schema": {"type": "integer"}}])}
    return paths


@access.public
async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(document())


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/openapi.json", openapi_json)
