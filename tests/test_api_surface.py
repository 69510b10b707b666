"""The OpenAI-compatible surface around the model routes: GET /v1/models/{model}, CORS for browser
clients (off by default; preflights never need the key), and /docs that works with no internet and
whose OpenAPI document declares the Bearer key."""

from __future__ import annotations

import re
from urllib.parse import urlparse

import pytest
from conftest import assert_error_shape, live_server

from server.tei import PATHS as TEI_PATHS

KEY = "sk-test"
AUTH = {"Authorization": f"Bearer {KEY}"}
ORIGIN = "https://app.example"


@pytest.fixture(scope="module")
def server(bge_m3_dir):
    with live_server(embedding_model=str(bge_m3_dir), api_keys=[KEY]) as srv:
        yield srv


@pytest.fixture(scope="module")
def cors_server(bge_m3_dir):
    with live_server(embedding_model=str(bge_m3_dir), api_keys=[KEY], cors_allow_origins=[ORIGIN]) as srv:
        yield srv


# ---- GET /v1/models/{model} ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bge-m3", "BAAI/bge-m3"])
def test_retrieve_a_served_model(server, name):
    with server.client(headers=AUTH) as client:
        card = client.get(f"/v1/models/{name}").json()
        listed = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    assert card == listed[name] == {"id": name, "object": "model", "created": card["created"], "owned_by": "BAAI"}


def test_retrieve_an_unknown_model_is_openai_404(server):
    with server.client(headers=AUTH) as client:
        for name in ("gpt-4o", "BAAI/bge-reranker-v2-m3"):  # the second is not served by this server
            err = assert_error_shape(client.get(f"/v1/models/{name}"), 404, "model_not_found")
            assert err["param"] == "model" and name in err["message"]
        assert client.get("/v1/models/bge-m3").status_code == 200
    with server.client() as client:
        assert client.get("/v1/models/bge-m3").status_code == 401


# ---- CORS ------------------------------------------------------------------------------------------


def preflight(client, path: str = "/v1/embeddings", origin: str = ORIGIN):
    return client.options(path, headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                         "Access-Control-Request-Headers": "authorization, content-type"})


def test_cors_is_off_by_default_and_a_preflight_still_needs_no_key(server):
    with server.client() as client:
        response = preflight(client)
        call = client.post("/v1/embeddings", json={"model": "bge-m3", "input": "x"},
                           headers={"Origin": ORIGIN, **AUTH})
    assert response.status_code != 401 and "access-control-allow-origin" not in response.headers
    assert call.status_code == 200 and "access-control-allow-origin" not in call.headers


@pytest.mark.parametrize("path", ["/v1/embeddings", "/v1/models", "/v2/rerank", "/embed", "/"])
def test_preflight_is_answered_without_the_key(cors_server, path):
    with cors_server.client() as client:
        response = preflight(client, path)
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "authorization" in response.headers["access-control-allow-headers"].lower()


def test_cross_origin_calls_still_need_the_key_and_carry_cors_headers(cors_server):
    with cors_server.client() as client:
        refused = client.post("/v1/embeddings", json={"model": "bge-m3", "input": "x"}, headers={"Origin": ORIGIN})
        served = client.post("/v1/embeddings", json={"model": "bge-m3", "input": "x"},
                             headers={"Origin": ORIGIN, **AUTH})
        stranger = preflight(client, origin="https://evil.example")
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == ORIGIN
    assert served.status_code == 200 and served.headers["access-control-allow-origin"] == ORIGIN
    assert "x-request-id" in served.headers["access-control-expose-headers"].lower()
    assert stranger.status_code == 400 and "access-control-allow-origin" not in stranger.headers


def test_a_star_allows_any_origin_as_given_on_the_command_line():
    from server.cli import _settings, build_parser

    settings = _settings(build_parser().parse_args(["serve", "--cors-allow-origins", "*", "--api-key", KEY]))
    assert settings.cors_allow_origins == ["*"]
    with live_server(cors_allow_origins=settings.cors_allow_origins, api_keys=[KEY]) as srv, srv.client() as client:
        response = preflight(client, "/v1/models", origin="http://localhost:5173")
    assert response.status_code == 200 and response.headers["access-control-allow-origin"] == "*"


def test_cors_origins_setting_from_the_environment(monkeypatch):
    from server.families import make_settings

    monkeypatch.setenv("INFERENCE_CORS_ALLOW_ORIGINS", "https://a.example, http://localhost:3000")
    assert make_settings().cors_allow_origins == ["https://a.example", "http://localhost:3000"]


# ---- /docs offline and the Bearer scheme -----------------------------------------------------------


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_every_asset_from_this_server(server, page):
    with server.client() as client:
        html = client.get(page)
        assert html.status_code == 200
        urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""", html.text)
        assets = [u for u in urls if not u.startswith("#")]
        assert assets, html.text
        for url in assets:
            assert not urlparse(url).netloc, f"{page} loads {url} from another host"
            assert client.get(url).status_code == 200, url
        assert "validatorUrl" in html.text and '"validatorUrl": null' in html.text or page == "/redoc"


def test_openapi_declares_the_bearer_key_on_exactly_the_guarded_routes(server):
    with server.client() as client:
        doc = client.get("/openapi.json").json()
    scheme = doc["components"]["securitySchemes"]["bearerAuth"]
    assert scheme["type"] == "http" and scheme["scheme"] == "bearer"
    for path, operations in doc["paths"].items():
        guarded = path.startswith(("/v1/", "/v2/")) or path in TEI_PATHS
        for operation in operations.values():
            assert (operation.get("security") == [{"bearerAuth": []}]) == guarded, path
    assert "/v1/models/{model}" in doc["paths"] and "/health" in doc["paths"]
