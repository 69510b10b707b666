"""A fourth family costs its folder and one registry line: the toy classifier (tests/classifier/),
registered by patching that line, gets its flags and env variables, its settings checks, its
download choice, its model loaded through the real runtime, its readiness, metrics, OpenAPI entry
and its route, served by the real app with nothing else edited."""

from __future__ import annotations

import argparse
import os

import pytest
import torch

import classifier
from classifier.model import LengthClassifier
from conftest import assert_error_shape, live_server
from server import families
from server.cli import _settings, build_parser, main
from server.config import ENV_PREFIX


@pytest.fixture
def registered(monkeypatch):
    """The one registry line, patched in: server/families.py's FAMILIES gains the classifier."""
    monkeypatch.setitem(families.FAMILIES, "classifier", classifier.FAMILY)
    for key in list(os.environ):
        if key.startswith(ENV_PREFIX) and key != f"{ENV_PREFIX}DEVICE":
            monkeypatch.delenv(key)


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    return classifier.FAMILY.tiny(tmp_path_factory.mktemp("models") / "length-classifier")


def serve_help() -> str:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["serve"].format_help()


def test_unregistered_it_is_nowhere():
    assert "classifier" not in families.FAMILIES
    assert "--classifier-model" not in serve_help()
    assert "classifier_max_chars" not in families.settings_class().model_fields


def test_registered_its_settings_are_flags_and_env_variables(registered, monkeypatch):
    text = serve_help()
    assert "--classifier-model" in text and f"{ENV_PREFIX}CLASSIFIER_MAX_CHARS" in text
    settings = _settings(build_parser().parse_args(["serve", "--classifier-max-chars", "12"]))
    assert classifier.FAMILY.settings_of(settings).max_chars == 12
    monkeypatch.setenv(f"{ENV_PREFIX}CLASSIFIER_MAX_CHARS", "34")
    assert classifier.FAMILY.settings_of(families.make_settings()).max_chars == 34
    # Its declared bounds are checked, and refused in the CLI's words.
    assert main(["serve", "--classifier-max-chars", "0"]) == 2


def test_registered_it_is_a_download_choice(registered):
    assert build_parser().parse_args(["download", "classifier"]).which == ["classifier"]


def test_registered_it_is_served_through_the_real_app(registered, classifier_dir):
    with live_server(classifier_model=str(classifier_dir), classifier_max_chars=40) as srv, srv.client() as client:
        ready = client.get("/ready")
        assert ready.status_code == 200 and ready.json()["models"] == {"classifier": True}
        assert "toy/length-classifier" in [m["id"] for m in client.get("/v1/models").json()["data"]]
        assert "/v1/classify" in client.get("/openapi.json").json()["paths"]

        texts = ["hi", "a longer sentence of several words"]
        response = client.post("/v1/classify", json={"model": "length-classifier", "input": texts})
        assert response.status_code == 200, response.text
        # The scores are the model's own on the same weights, whatever it was batched with.
        reference = LengthClassifier(classifier_dir, torch.device("cpu"), torch.float32).run_batch(texts)
        got = response.json()["data"]
        for row, (short, long) in zip(got, reference, strict=True):
            assert (row["short"], row["long"]) == pytest.approx((short, long), abs=1e-6)

        # Its own limit, from its own setting, answered in the caller's error shape.
        too_long = client.post("/v1/classify", json={"model": "toy/length-classifier", "input": "x" * 41})
        assert_error_shape(too_long, 400)
        assert "at most 40" in too_long.json()["error"]["message"]
        assert_error_shape(client.post("/v1/classify", json={"model": "bge-m3", "input": "x"}), 404)

        metrics = client.get("/metrics").text
        assert 'inference_input_tokens_total{model="toy/length-classifier"}' in metrics
        assert 'inference_batch_size_count{model="toy/length-classifier"}' in metrics
