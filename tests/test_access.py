"""Access: with API keys configured, every /v1 route, Cohere's /v2/rerank and TEI's routes (found by
walking the app's routes, so a new route cannot slip through) refuse a missing, malformed or wrong key
with a 401 (OpenAI's body; TEI's on TEI's routes); keys never reach the log; probes stay open."""

from __future__ import annotations

import io
import logging
import re

import httpx
import numpy as np
import pytest
from conftest import live_server
from starlette.routing import Mount

from server.tei import PATHS as TEI_PATHS

KEYS = ["sk-first-0123456789abcdef", "sk-second-fedcba9876543210"]
# Routes that are deliberately open. Anything else outside /v1 makes the walk below fail: decide
# whether it needs a key, then list it here or move it under /v1.
OPEN_ROUTES = {"/health", "/ready", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
# Keyed routes outside /v1: other APIs' paths (Cohere's v2, TEI's at the root).
KEYED_OUTSIDE_V1 = {"/v2/rerank", *TEI_PATHS}


def keyed_route(path: str) -> bool:
    return path.startswith("/v1") or path in KEYED_OUTSIDE_V1


def walk_routes(routes, prefix: str = ""):
    """(path, methods) of every endpoint the app serves, whatever the router nesting. FastAPI 0.16x
    keeps an included router as one entry whose effective routes carry the full path; older
    versions copy APIRoutes into app.routes; Starlette mounts nest."""
    for route in routes:
        if hasattr(route, "effective_route_contexts"):
            for context in route.effective_route_contexts():
                yield prefix + context.path, set(context.methods or ())
        elif isinstance(route, Mount):
            yield from walk_routes(route.routes, prefix + route.path)
        else:
            methods = getattr(route, "methods", None)
            assert methods is not None, f"a route without methods (websocket?) at {route.path}: cover it here"
            yield prefix + route.path, set(methods)


def assert_401(response: httpx.Response, where: str) -> None:
    assert response.status_code == 401, (where, response.status_code, response.text[:200])
    body = response.json()
    if response.request.url.path in TEI_PATHS:  # TEI's clients read TEI's body
        assert set(body) == {"error", "error_type"} and body["error"], body
        assert body["error_type"] == "Unauthorized", body  # not Validation: nothing about the request was invalid
        return
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert body["error"]["type"] == "authentication_error" and body["error"]["code"] == "invalid_api_key", body
    for key in KEYS:
        assert key not in response.text


@pytest.fixture(scope="module")
def keyed(bge_m3_dir, reranker_dir):
    with live_server(embedding_model=str(bge_m3_dir), reranker_model=str(reranker_dir), api_keys=KEYS) as srv:
        yield srv


def _request(client: httpx.Client, method: str, path: str, headers: dict, params: dict | None = None):
    """A plausible request for each route kind: the key check must not depend on the body."""
    if method == "GET":
        return client.get(path, headers=headers, params=params)
    if "audio" in path:
        return client.post(path, headers=headers, params=params, data={"model": "SenseVoiceSmall"},
                           files={"file": ("a.wav", io.BytesIO(b"RIFF0000WAVE"))})
    return client.post(path, headers=headers, params=params, json={"model": "bge-m3", "input": "x"})


def test_every_v1_route_is_found_by_the_walk(keyed):
    found = dict(walk_routes(keyed.app.routes))
    v1 = {path for path in found if path.startswith("/v1")}
    assert {"/v1/models", "/v1/embeddings", "/v1/rerank", "/v1/audio/transcriptions"} <= v1
    outside = {path for path in found if not path.startswith("/v1/")}
    decided = OPEN_ROUTES | KEYED_OUTSIDE_V1
    assert outside <= decided, f"routes outside /v1 that nobody decided about: {outside - decided}"
    assert KEYED_OUTSIDE_V1 <= outside
    with keyed.client() as client:
        documented = {p for p in client.get("/openapi.json").json()["paths"] if p.startswith("/v1")}
    templates = {re.sub(r"\{(\w+):\w+\}", r"{\1}", path) for path in v1}  # /v1/models/{model:path}
    assert documented <= templates, documented - templates


BAD_AUTH = {
    "missing": None,
    "empty": "",
    "scheme-only": "Bearer",
    "scheme-and-space": "Bearer ",
    "basic": f"Basic {KEYS[0]}",
    "no-scheme": KEYS[0],
    "token-scheme": f"Token {KEYS[0]}",
    "no-space": f"Bearer{KEYS[0]}",
    "wrong": "Bearer sk-not-a-key",
    "prefix-of-key": f"Bearer {KEYS[0][:-1]}",
    "key-plus-char": f"Bearer {KEYS[0]}x",
    "upper-case-key": f"Bearer {KEYS[0].upper()}",
    "two-keys": f"Bearer {KEYS[0]},{KEYS[1]}",
    "key-and-junk": f"Bearer {KEYS[0]} junk",
    "latin-1": b"Bearer sk-cl\xe9",
    "nul": "Bearer sk-first\x00",
}


def test_every_v1_route_refuses_a_missing_malformed_or_wrong_key(keyed):
    routes = [(path, method) for path, methods in walk_routes(keyed.app.routes) if keyed_route(path)
              for method in sorted(methods)]
    checked = 0
    with keyed.client() as client:
        for path, method in routes:
            for name, value in BAD_AUTH.items():
                headers = {} if value is None else {"Authorization": value}
                try:
                    response = _request(client, method, path, headers)
                except httpx.LocalProtocolError:  # the client itself refuses to send this header
                    continue
                assert_401(response, f"{method} {path} with {name}")
                checked += 1
            # A key anywhere but the Authorization header does not count.
            assert_401(_request(client, method, path, {}, params={"api_key": KEYS[0]}), f"{method} {path} query")
            assert_401(_request(client, method, path, {"X-API-Key": KEYS[0], "api-key": KEYS[0]}),
                       f"{method} {path} other headers")
            # Each configured key opens it (whatever the route then says about the body).
            for key in KEYS:
                for scheme in ("Bearer", "bearer"):
                    response = _request(client, method, path, {"Authorization": f"{scheme} {key}"})
                    assert response.status_code != 401, (method, path, response.text[:200])
    assert checked >= 4 * (len(BAD_AUTH) - 2)


def test_probes_and_metrics_stay_open_by_default(keyed):
    with keyed.client() as client:
        assert client.get("/health").status_code == 200
        assert client.get("/ready").status_code == 200
        assert client.get("/metrics").status_code == 200
        assert client.get("/openapi.json").status_code == 200


def test_the_key_is_checked_before_the_body_is_parsed(keyed):
    with keyed.client() as client:
        for path in ("/v1/embeddings", "/v1/rerank"):
            assert_401(client.post(path, content=b"{not json", headers={"content-type": "application/json"}), path)
        assert_401(client.post("/v1/audio/transcriptions", content=b"--x\r\nbroken",
                               headers={"content-type": "multipart/form-data; boundary=x"}), "multipart")


def test_keys_never_reach_the_log_even_at_debug(keyed, caplog):
    """Every logger the server uses, uvicorn's included, at DEBUG, through right keys, wrong keys,
    a validation error, an unknown model and an internal error."""
    uvicorn_loggers = [logging.getLogger(n) for n in ("uvicorn", "uvicorn.error", "uvicorn.access")]
    saved = [lg.level for lg in uvicorn_loggers]
    batcher = keyed.runtime.served["embedding"].batcher
    original = batcher.run_batch

    def faulty(items):
        if any(list(it.input_ids[1:-1]) == [901, 902, 903] for it in items):
            raise RuntimeError("injected failure")
        return original(items)

    caplog.set_level(logging.DEBUG)
    for lg in uvicorn_loggers:
        lg.setLevel(logging.DEBUG)
    batcher.run_batch = faulty
    near_miss = KEYS[0][:-1] + "X"
    responses = []
    try:
        for key in (KEYS[0], near_miss, KEYS[1]):
            auth = {"Authorization": f"Bearer {key}"}
            with keyed.client() as client:
                responses += [
                    client.post("/v1/embeddings", json={"model": "bge-m3", "input": "hello"}, headers=auth),
                    client.post("/v1/embeddings", json={"model": "bge-m3", "input": 3}, headers=auth),
                    client.post("/v1/rerank", json={"model": "nope", "query": "q", "documents": ["d"]}, headers=auth),
                    client.get("/v1/models", headers={**auth, "X-Request-ID": "trace-me"}),
                    client.get("/v1/models", headers={"Authorization": f"Basic {key}"}),
                ]
            with keyed.client() as client:  # a 500 closes its connection
                responses.append(client.post("/v1/embeddings", json={"model": "bge-m3", "input": [901, 902, 903]},
                                             headers=auth))
    finally:
        batcher.run_batch = original
        for lg, level in zip(uvicorn_loggers, saved):
            lg.setLevel(level)

    statuses = [r.status_code for r in responses]
    assert 200 in statuses and 401 in statuses and 400 in statuses and 404 in statuses and 500 in statuses, statuses
    server_records = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert any(r.levelno == logging.ERROR for r in server_records), "the internal error was not logged"
    text = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in server_records)
    for key in (*KEYS, near_miss):
        assert key not in text
        assert key[4:] not in text  # not even without its prefix
    for response in responses:
        for key in (*KEYS, near_miss):
            assert key not in response.text



def test_no_page_the_server_serves_shows_a_key(keyed):
    """/info (TEI's, which reports the settings a client may need), /metrics, the OpenAPI schema
    and its pages, the model list, the probes: read with a right key, none holds any key."""
    auth = {"Authorization": f"Bearer {KEYS[0]}"}
    with keyed.client() as client:
        pages = {path: client.get(path, headers=auth) for path in
                 ("/info", "/metrics", "/openapi.json", "/docs", "/redoc", "/v1/models", "/health", "/ready")}
    for path, response in pages.items():
        assert response.status_code == 200, (path, response.status_code)
        for key in KEYS:
            assert key not in response.text and key[4:] not in response.text, path


def test_protect_metrics_puts_metrics_behind_the_key_but_never_the_probes(bge_m3_dir):
    with live_server(embedding_model=str(bge_m3_dir), api_keys=KEYS, protect_metrics=True) as srv, \
            srv.client() as client:
        assert srv.app.state.settings.protect_metrics is True
        assert_401(client.get("/metrics"), "/metrics without a key")
        assert_401(client.get("/metrics", headers={"Authorization": "Bearer wrong"}), "/metrics wrong key")
        metrics = client.get("/metrics", headers={"Authorization": f"Bearer {KEYS[1]}"})
        assert metrics.status_code == 200 and "inference_queue_depth" in metrics.text
        assert client.get("/health").status_code == 200
        assert client.get("/ready").status_code == 200


def test_an_open_server_needs_no_key(bge_m3_dir):
    with live_server(embedding_model=str(bge_m3_dir)) as srv, srv.client() as client:
        response = client.post("/v1/embeddings", json={"model": "bge-m3", "input": "open"})
        assert response.status_code == 200
        assert np.isfinite(response.json()["data"][0]["embedding"]).all()
        assert client.get("/v1/models", headers={"Authorization": "Bearer anything"}).status_code == 200
