"""huggingface_hub's ``InferenceClient(url)``, unmodified, against TEI's routes: feature extraction
posts to the root (TEI's alias of /embed), get_endpoint_info reads /info, health_check /health."""

from __future__ import annotations

import huggingface_hub  # noqa: E402 - a dependency of the project or of its [test] extra
import numpy as np
import pytest
from client_server import AUTH, KEY, TEXTS, close, server, vectors


def client(srv, token: str = KEY, provider: str | None = None):
    return huggingface_hub.InferenceClient(model=srv.url, token=token, provider=provider)


def test_feature_extraction(server):
    one = client(server).feature_extraction(TEXTS[0])
    batch = client(server).feature_extraction(TEXTS)
    assert one.dtype == np.float32 and one.shape == (1, len(vectors(server, TEXTS[:1])[0]))
    assert close(one[0], vectors(server, TEXTS[:1])[0])
    assert all(close(b, w) for b, w in zip(batch, vectors(server, TEXTS)))


def test_feature_extraction_unnormalized_and_truncated(server):
    raw = client(server).feature_extraction(TEXTS[0], normalize=False, truncate=True)
    with server.client(headers=AUTH) as http:
        want = http.post("/embed", json={"inputs": TEXTS[0], "normalize": False}).json()
    assert close(raw[0], want[0]) and abs(np.linalg.norm(raw[0]) - 1) > 1e-3


def test_endpoint_info_and_health(server):
    # The endpoint helpers want the provider named; feature extraction works either way.
    info = client(server, provider="hf-inference").get_endpoint_info()
    assert info["model_id"] == "BAAI/bge-m3" and info["model_type"] == {"embedding": {"pooling": "cls"}}
    assert client(server, provider="hf-inference").health_check()


def test_errors_raise_with_the_server_message(server):
    with pytest.raises(huggingface_hub.errors.HfHubHTTPError) as err:
        client(server, token="wrong").feature_extraction("x")
    assert err.value.response.status_code == 401
    with pytest.raises(huggingface_hub.errors.HfHubHTTPError) as err:
        client(server).feature_extraction("x", prompt_name="query")
    assert "prompt_name" in str(err.value)  # the client shows TEI's "error" field
