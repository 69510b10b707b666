"""NaN or infinity out of a model (a float16 overflow) fails that item, clearly, and only that item:
never a 200 with ``null`` vectors, a 0.0 score or an empty transcript."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from server.embedding.model import BgeM3, EmbedItem
from server.errors import NonFiniteOutput
from server.compute.finite import finite_rows
from server.reranker.model import BgeReranker
from server.asr.model import AsrItem, SenseVoice
from tests.conftest import assert_error_shape, live_server

CPU = torch.device("cpu")


def poison(embeddings: torch.nn.Embedding, token_id: int) -> None:
    """Any text holding this token computes NaN from the first layer on."""
    with torch.no_grad():
        embeddings.weight[token_id] = float("nan")


def test_finite_rows_judges_each_row_on_its_own_positions():
    values = torch.zeros(3, 4, 2)
    values[1, 2, 0] = float("nan")
    values[2, 3, 1] = float("inf")
    assert finite_rows(values) == [True, False, False]
    assert finite_rows(values, [4, 2, 3]) == [True, True, True]  # the bad values lie in padding
    assert finite_rows(values, [4, 3, 4]) == [True, False, False]
    assert finite_rows(torch.tensor([1.0, float("nan"), -float("inf")])) == [True, False, False]


def test_embeddings_fail_the_non_finite_item_alone(bge_m3_dir):
    model = BgeM3(bge_m3_dir, CPU, torch.float32)
    clean, poisoned = model.tokenize(["river bamboo", "panda river"])
    alone = model.run_batch([EmbedItem(clean, sparse=True, colbert=True)])[0]
    poison(model.model.model.embeddings.word_embeddings, poisoned[1])
    for kw in ({}, {"sparse": True}, {"colbert": True}):
        bad, good = model.run_batch([EmbedItem(poisoned, **kw), EmbedItem(clean, sparse=True, colbert=True)])
        assert isinstance(bad, NonFiniteOutput) and bad.status == 500
        assert np.abs(good.dense - alone.dense).max() <= 1e-5
        assert np.abs(good.colbert - alone.colbert).max() <= 1e-5


def test_embeddings_check_the_outputs_an_item_asked_for(bge_m3_dir):
    model = BgeM3(bge_m3_dir, CPU, torch.float32)
    [ids] = model.tokenize(["river bamboo panda"])
    head = model.model.colbert_linear
    with torch.no_grad():  # only the ColBERT vectors overflow; dense and sparse stay finite
        head.weight[0, 0] = float("inf")
    plain, asked = model.run_batch([EmbedItem(ids), EmbedItem(ids, colbert=True)])
    assert np.isfinite(plain.dense).all()
    assert isinstance(asked, NonFiniteOutput)


def test_rerank_fails_a_non_finite_score_instead_of_scoring_it(reranker_dir):
    model = BgeReranker(reranker_dir, CPU, torch.float32)
    query, clean, poisoned = model.tokenize(["river", "bamboo grows", "panda eats"])
    alone = model.run_batch([model.pair(query, clean)])[0]
    poison(model.model.roberta.embeddings.word_embeddings, poisoned[0])
    bad, good = model.run_batch([model.pair(query, poisoned), model.pair(query, clean)])
    assert isinstance(bad, NonFiniteOutput)
    assert good == pytest.approx(alone, abs=1e-5)


def test_transcription_fails_a_non_finite_segment_instead_of_an_empty_transcript(sensevoice_dir):
    model = SenseVoice(sensevoice_dir, CPU, torch.float32)
    audio = np.random.default_rng(0).standard_normal(16000 * 3).astype(np.float32) * 0.1
    alone = model.run_batch([AsrItem(audio)])[0]

    def overflow_first_row(module, args, output):
        out, lengths = output
        out = out[0] if isinstance(out, tuple) else out
        out[0, 5] = float("nan")
        return output

    handle = model.model.encoder.register_forward_hook(overflow_first_row)
    try:
        bad, good = model.run_batch([AsrItem(audio), AsrItem(audio)])
    finally:
        handle.remove()
    assert isinstance(bad, NonFiniteOutput)
    assert good.raw == alone.raw and good.frames == alone.frames


def test_a_non_finite_embedding_is_a_500_in_openais_shape_and_counted(bge_m3_dir):
    with live_server(embedding_model=str(bge_m3_dir)) as srv:
        model = srv.runtime.served["embedding"].service.model
        [poisoned] = model.tokenize(["panda"])
        poison(model.model.model.embeddings.word_embeddings, poisoned[1])
        with srv.client() as client:
            response = client.post("/v1/embeddings", json={"model": "bge-m3", "input": ["river", "panda"]})
            err = assert_error_shape(response, 500, "non_finite_output")
            assert "NaN" in err["message"] and "--dtype" in err["message"]
            assert client.post("/v1/embeddings", json={"model": "bge-m3", "input": "river"}).status_code == 200
            metrics = client.get("/metrics").text
    counted = re.search(r'^inference_items_total\{model="bge-m3",outcome="non_finite"\} (\S+)$', metrics, re.M)
    assert counted and float(counted.group(1)) == 1
