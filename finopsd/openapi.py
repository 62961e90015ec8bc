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


@access.public
async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(document())


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/openapi.json", openapi_json)
