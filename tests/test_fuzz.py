"""Bad input: property-based fuzzing of the app's own OpenAPI schema (schemathesis + hypothesis)
against the live server, and hand-made hostile bodies (huge, deeply nested, too many inputs,
invalid UTF-8, lone surrogates).

The fuzz runs are deterministic (``derandomize``) so CI sees the same cases every run; set
``FUZZ_RANDOM=1`` to explore new ones. Failures are collected, not raised inside hypothesis, so a
run never stops to shrink and its time stays bounded by ``max_examples``.
"""

from __future__ import annotations

import copy
import io
import json
import os
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import pytest
import requests  # schemathesis' own transport
import schemathesis
from conftest import assert_error_shape, live_server  # noqa: E402
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

ALL_CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
              response_schema_conformance, response_headers_conformance]
EMBEDDINGS, RERANK, TRANSCRIPTIONS = "/v1/embeddings", "/v1/rerank", "/v1/audio/transcriptions"
SERVED = {
    "EmbeddingRequest": ["bge-m3", "BAAI/bge-m3"],
    "RerankRequest": ["BAAI/bge-reranker-v2-m3", "bge-reranker-v2-m3"],
    "Body_create_transcription_v1_audio_transcriptions_post": [
        "FunAudioLLM/SenseVoiceSmall", "SenseVoiceSmall", "iic/SenseVoiceSmall"],
}



@pytest.fixture(scope="module")
def srv(bge_m3_dir, reranker_dir, sensevoice_dir):
    with live_server(embedding_model=str(bge_m3_dir), reranker_model=str(reranker_dir),
                     asr_model=str(sensevoice_dir)) as running:
        yield running


@pytest.fixture(scope="module")
def openapi(srv) -> dict:
    with srv.client() as client:
        return client.get("/openapi.json").json()


@pytest.fixture(scope="module")
def raw_schema(openapi):
    """The app's own schema, exactly as it serves it."""
    return schemathesis.openapi.from_dict(copy.deepcopy(openapi))


@pytest.fixture(scope="module")
def steered_schema(openapi):
    """The same schema with `model` narrowed to the served names, so generated requests get past the
    model lookup and reach tokenizing, batching and decoding. Nothing else is changed."""
    doc = copy.deepcopy(openapi)
    for name, models in SERVED.items():
        doc["components"]["schemas"][name]["properties"]["model"]["enum"] = models
    return schemathesis.openapi.from_dict(doc)


def _clips() -> list[bytes]:
    """Short real audio so some transcription cases reach the model (the generated `file` is text)."""
    import av
    from audio_files import encode

    t = np.arange(16000) / 16000
    tone = (0.3 * np.sin(2 * np.pi * 440 * t))[None].astype(np.float32)
    speech_file = Path(__file__).parent / "data" / "speech_pauses.flac"
    with av.open(str(speech_file)) as container:
        frames = [f.to_ndarray() for f in container.decode(audio=0)]
        rate = container.streams.audio[0].sample_rate
    speech = np.concatenate(frames, axis=1).astype(np.float32)[:1, int(0.4 * rate): int(2.0 * rate)]
    if np.issubdtype(speech.dtype, np.integer):  # pragma: no cover - flac decodes to s16/s32
        speech = speech / np.iinfo(speech.dtype).max
    return [encode(tone, 16000, "wav_s16"), encode(speech, rate, "flac"),
            encode(np.zeros((1, 8000), np.float32), 16000, "mp3")]


class Fuzz:
    """Runs hypothesis over one operation's strategy, checking every response; collects failures."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.statuses: Counter = Counter()
        self.failures: dict[tuple, str] = {}
        self.cases = 0
        self.session = requests.Session()

    def run(self, schema, path: str, method: str, mode: GenerationMode, max_examples: int,
            checks: list, checks_on_success: list | None = None, audio: list[bytes] | None = None) -> None:
        operation = schema[path][method]
        audio_choice = st.sampled_from([None, *audio]) if audio else st.none()

        @given(case=operation.as_strategy(generation_mode=mode), clip=audio_choice)
        @settings(max_examples=max_examples, deadline=None, database=None,
                  derandomize=not os.environ.get("FUZZ_RANDOM"), phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        def one(case, clip):
            if clip is not None and isinstance(case.body, dict) and "file" in case.body:
                case.body["file"] = clip
            self.cases += 1
            try:
                response = case.call(base_url=self.base_url, session=self.session, timeout=60)
            except requests.RequestException as err:  # a dropped connection is a crash as far as a client can tell
                self._record(("transport", path, type(err).__name__), f"{err!r} for body {_short(case.body)}")
                self.session = requests.Session()
                return
            self.statuses[(path, mode.value, response.status_code)] += 1
            active = checks if response.status_code >= 300 or checks_on_success is None else checks_on_success
            try:
                case.validate_response(response, checks=active)
            except BaseException as err:  # schemathesis raises Failure or a FailureGroup of them
                for failure in getattr(err, "exceptions", (err,)):
                    title = getattr(failure, "title", type(failure).__name__)
                    self._record((path, response.status_code, title),
                                 f"{title}: {str(failure).strip()[:400]}\n  body sent: {_short(case.body)}\n"
                                 f"  response: {response.status_code} {response.text[:300]}")

        one()

    def _record(self, key: tuple, detail: str) -> None:
        self.failures.setdefault(key, detail)

    def report(self) -> str:
        return "\n\n".join(self.failures.values())


def _short(body) -> str:
    text = repr(body)
    return text if len(text) < 300 else text[:300] + f"... ({len(text)} chars)"


# Tuned to keep the whole module near a minute on 2 CPU cores; about 4,000 requests in all.
BUDGET = {
    (EMBEDDINGS, GenerationMode.POSITIVE): 900, (EMBEDDINGS, GenerationMode.NEGATIVE): 600,
    (RERANK, GenerationMode.POSITIVE): 700, (RERANK, GenerationMode.NEGATIVE): 500,
    (TRANSCRIPTIONS, GenerationMode.POSITIVE): 300, (TRANSCRIPTIONS, GenerationMode.NEGATIVE): 400,
}


@pytest.mark.parametrize("path", [EMBEDDINGS, RERANK])
def test_fuzz_json_endpoints(srv, raw_schema, steered_schema, path):
    fuzz = Fuzz(srv.url)
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        fuzz.run(steered_schema, path, "POST", mode, BUDGET[(path, mode)], ALL_CHECKS)
    fuzz.run(raw_schema, path, "POST", GenerationMode.POSITIVE, 100, ALL_CHECKS)  # unknown model names
    print(f"{path}: {fuzz.cases} cases, statuses {dict(fuzz.statuses)}")
    assert not fuzz.failures, f"{len(fuzz.failures)} distinct failures:\n{fuzz.report()}"
    ok = sum(n for (p, _, status), n in fuzz.statuses.items() if status == 200)
    assert ok >= 50, f"too few generated requests got past validation: {fuzz.statuses}"
    assert fuzz.cases >= sum(BUDGET[(path, m)] for m in GenerationMode if (path, m) in BUDGET) // 2


def test_fuzz_transcriptions(srv, steered_schema, raw_schema):
    """Multipart: schemathesis sends `file` as a text part (the schema says contentMediaType
    octet-stream, which it fills with a string); some cases carry real audio instead, so the
    decoder, VAD and model run and every response_format's 200 is checked against the schema."""
    fuzz = Fuzz(srv.url)
    clips = _clips()
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        fuzz.run(steered_schema, TRANSCRIPTIONS, "POST", mode, BUDGET[(TRANSCRIPTIONS, mode)], ALL_CHECKS,
                 audio=clips)
    fuzz.run(raw_schema, TRANSCRIPTIONS, "POST", GenerationMode.POSITIVE, 60, ALL_CHECKS)
    print(f"{TRANSCRIPTIONS}: {fuzz.cases} cases, statuses {dict(fuzz.statuses)}")
    assert not fuzz.failures, f"{len(fuzz.failures)} distinct failures:\n{fuzz.report()}"
    ok = sum(n for (_, _, status), n in fuzz.statuses.items() if status == 200)
    assert ok >= 30, f"too few cases reached the model: {fuzz.statuses}"


def test_fuzz_operations_without_parameters(srv, raw_schema):
    fuzz = Fuzz(srv.url)
    for path in ("/v1/models", "/health", "/ready"):
        fuzz.run(raw_schema, path, "GET", GenerationMode.POSITIVE, 5, ALL_CHECKS)
    fuzz.run(raw_schema, "/metrics", "GET", GenerationMode.POSITIVE, 5, ALL_CHECKS)
    assert not fuzz.failures, fuzz.report()


def test_transcription_success_responses_conform_to_the_schema(srv, raw_schema):
    """Regression: the 200 was documented as verbose_json only, while json answers {text} and
    text/srt/vtt answer text (fixed in cc3be01)."""
    operation = raw_schema[TRANSCRIPTIONS]["POST"]
    clip = _clips()[1]
    failures = []
    for fmt in ("json", "verbose_json", "text", "srt", "vtt"):
        case = operation.Case(body={"file": clip, "model": "SenseVoiceSmall", "response_format": fmt},
                              media_type="multipart/form-data")
        response = case.call(base_url=srv.url)
        assert response.status_code == 200
        try:
            case.validate_response(response, checks=[content_type_conformance, response_schema_conformance])
        except BaseException as err:
            failures.append(f"{fmt}: {str(err).strip().splitlines()[0]}")
    assert not failures, failures


def test_metrics_content_type_conforms_to_the_schema(srv, raw_schema):
    """Regression: /metrics was documented as application/json (fixed in cc3be01)."""
    case = raw_schema["/metrics"]["GET"].Case()
    response = case.call(base_url=srv.url)
    assert response.status_code == 200
    case.validate_response(response, checks=[content_type_conformance])


# ---------------------------------------------------------------------------------------------
# Hand-made hostile bodies
# ---------------------------------------------------------------------------------------------

JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def small_cap(bge_m3_dir, reranker_dir):
    with live_server(embedding_model=str(bge_m3_dir), reranker_model=str(reranker_dir),
                     max_body_bytes=256 * 1024) as running:
        yield running


class PeakRss:
    """Peak resident memory of this process (the server runs in it) while the block runs."""

    def __enter__(self):
        import psutil

        self._proc = psutil.Process()
        self.base = self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        for _ in range(100_000):  # bounded: ~17 minutes at most
            if self._stop.wait(0.01):
                return
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.base) / 2**20


def _chunks(head: bytes, total: int, tail: bytes, chunk: int = 64 * 1024):
    yield head
    for _ in range(total // chunk):
        yield b"a" * chunk
    yield tail


@pytest.mark.parametrize("path", [EMBEDDINGS, RERANK])
def test_body_over_the_cap_is_413_declared_or_streamed(small_cap, path):
    head = (b'{"model":"bge-m3","input":"' if path == EMBEDDINGS
            else b'{"model":"bge-reranker-v2-m3","query":"q","documents":["')
    tail = b'"}' if path == EMBEDDINGS else b'"]}'
    with small_cap.client() as client, PeakRss() as rss:
        declared = client.post(path, content=head + b"a" * (300 * 1024) + tail, headers=JSON)
        # 64 MiB streamed without Content-Length: the server must stop reading at the cap.
        streamed = client.post(path, content=_chunks(head, 64 * 2**20, tail), headers=JSON)
        assert client.get("/health").status_code == 200
    for response in (declared, streamed):
        assert_error_shape(response, 413)["code"] == "payload_too_large"
    assert rss.growth_mb < 64, f"resident memory grew {rss.growth_mb:.0f} MB"


@pytest.mark.parametrize("body", [
    b'{"model":"bge-m3","input":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b'{"model":"bge-m3","input":["x"],"user":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    b'{"model":"bge-m3","input":' + b"[" * 100_000,  # unterminated
], ids=["input", "ignored-field", "top-level", "objects", "unterminated"])
def test_deeply_nested_json_is_a_clear_400(srv, body):
    with srv.client() as client:
        for path in (EMBEDDINGS, RERANK):
            response = client.post(path, content=body, headers=JSON)
            assert_error_shape(response, 400)
        assert client.get("/health").status_code == 200


def test_too_many_inputs_or_documents_is_400_without_doing_the_work(srv):
    with srv.client() as client:
        started = time.monotonic()
        texts = client.post(EMBEDDINGS, json={"model": "bge-m3", "input": ["a"] * 100_000})
        ids = client.post(EMBEDDINGS, json={"model": "bge-m3", "input": [[5, 6]] * 100_000})
        docs = client.post(RERANK, json={"model": "bge-reranker-v2-m3", "query": "q", "documents": ["d"] * 100_000})
        elapsed = time.monotonic() - started
    for response, param in ((texts, "input"), (ids, "input"), (docs, "documents")):
        err = assert_error_shape(response, 400)
        assert err["param"] == param and "100000" in err["message"], err
    assert elapsed < 5, elapsed


def test_a_long_token_id_list_is_one_input_and_a_400(srv):
    with srv.client() as client:
        response = client.post(EMBEDDINGS, json={"model": "bge-m3", "input": [5] * 100_000})
    assert assert_error_shape(response, 400)["code"] == "context_length_exceeded"


@pytest.mark.parametrize("raw", [
    b"\xff\xfe",  # not UTF-8 at all
    b"\xc3\x28",  # bad continuation byte
    b"\xc0\xaf",  # overlong encoding of '/'
    b"\xe2\x82",  # truncated sequence
    b"\xf8\x88\x80\x80\x80",  # 5-byte form
    b"\xed\xa0\x80",  # a UTF-16 surrogate in CESU-8: Python's json.loads lets it through ('surrogatepass')
], ids=["ff-fe", "bad-continuation", "overlong", "truncated", "five-byte", "encoded-surrogate"])
def test_invalid_utf8_in_a_json_body_is_400(srv, raw):
    """The CESU-8 surrogate was a 500 (TypeError in the tokenizer) until cc3be01."""
    bodies = {
        EMBEDDINGS: b'{"model":"bge-m3","input":"abc ' + raw + b' def"}',
        RERANK: b'{"model":"bge-reranker-v2-m3","query":"q ' + raw + b'","documents":["d"]}',
    }
    with srv.client() as client:
        for path, body in bodies.items():
            assert_error_shape(client.post(path, content=body, headers=JSON), 400)


def _dumps_raw(obj) -> bytes:
    """JSON with non-ASCII escaped, so lone surrogates travel as valid-JSON \\udXXX escapes."""
    return json.dumps(obj, ensure_ascii=True).encode("ascii")


def test_any_string_content_never_causes_a_5xx(srv):
    """Every string field of both JSON endpoints filled with arbitrary code points, lone surrogates
    and control characters included (hypothesis' default text excludes surrogates). Regression: a
    lone surrogate was a 500 in input/query/documents (the tokenizer's TypeError) and in `model`
    (the 404 body could not be encoded) until cc3be01."""
    text = st.text(st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF), min_size=1, max_size=12)
    bodies = st.one_of(
        st.builds(lambda i, m: {"model": m, "input": i}, st.one_of(text, st.lists(text, min_size=1, max_size=3)),
                  st.one_of(st.just("bge-m3"), text)).map(lambda b: (EMBEDDINGS, b)),
        st.builds(lambda q, d, m: {"model": m, "query": q, "documents": d}, text,
                  st.lists(st.one_of(text, st.builds(lambda t: {"text": t}, text)), min_size=1, max_size=3),
                  st.one_of(st.just("bge-m3"), st.just("bge-reranker-v2-m3"), text)).map(lambda b: (RERANK, b)),
    )
    bad: list[str] = []

    @given(bodies)
    @example((EMBEDDINGS, {"model": "bge-m3", "input": "lone \ud800 surrogate"}))
    @example((EMBEDDINGS, {"model": "\udc80", "input": "x"}))
    @example((RERANK, {"model": "bge-reranker-v2-m3", "query": "\udfff", "documents": ["d"]}))
    @example((RERANK, {"model": "bge-reranker-v2-m3", "query": "q", "documents": [{"text": "\ud800"}]}))
    @settings(max_examples=200, deadline=None, database=None, derandomize=not os.environ.get("FUZZ_RANDOM"),
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def one(path_body):
        path, body = path_body
        with httpx.Client(base_url=srv.url, timeout=30) as client:  # one connection per example
            try:
                response = client.post(path, content=_dumps_raw(body), headers=JSON)
            except httpx.TransportError as err:
                bad.append(f"{path} {body!r}: {err!r}")
                return
        if response.status_code >= 500:
            bad.append(f"{path} {body!r}: {response.status_code}")

    one()
    assert not bad, f"{len(bad)} bodies got a 5xx, e.g. {bad[:5]}"


def test_an_over_long_input_is_refused_or_cut_cheaply(bge_m3_dir, reranker_dir):
    """Regression: an over-long input was tokenized in full before the token limit was checked:
    1 MiB (under the 16 MiB body cap) cost ~0.5 s and ~145 MB, 4 MiB ~5 s and ~545 MB.
    The same text with truncate=true, as a rerank query, and as a document cut to 2 windows, must be
    as cheap."""
    words = (b"panda bamboo tea " * 70_000)[: 1024 * 1024]
    with live_server(embedding_model=str(bge_m3_dir), reranker_model=str(reranker_dir)) as running, \
            running.client() as client:
        client.post(EMBEDDINGS, json={"model": "bge-m3", "input": "warm"})
        cases = {
            "refused": (EMBEDDINGS, b'{"model":"bge-m3","input":"' + words + b'"}'),
            "truncated": (EMBEDDINGS, b'{"model":"bge-m3","truncate":true,"input":"' + words + b'"}'),
            "query": (RERANK, b'{"model":"bge-reranker-v2-m3","documents":["d"],"query":"' + words + b'"}'),
            "document": (RERANK, b'{"model":"bge-reranker-v2-m3","query":"q","max_chunks_per_doc":2,'
                                 b'"documents":["' + words + b'"]}'),
        }
        measured = {}
        for name, (path, body) in cases.items():
            with PeakRss() as rss:
                started = time.monotonic()
                response = client.post(path, content=body, headers=JSON)
                measured[name] = (response, time.monotonic() - started, rss.growth_mb)
    assert assert_error_shape(measured["refused"][0], 400)["code"] == "context_length_exceeded"
    truncated = measured["truncated"][0]
    assert truncated.status_code == 200 and truncated.json()["usage"]["prompt_tokens"] == 8192
    assert measured["query"][0].status_code == 200 and measured["document"][0].status_code == 200
    for name, (_, elapsed, growth) in measured.items():
        # Memory, not time, tells whether the whole text was tokenized (+145 MB for 1 MiB). The
        # bound leaves room for allocator noise (up to ~45 MB seen for the 1 MiB body's own copies).
        assert growth < 80, f"{name}: {elapsed:.2f} s, +{growth:.0f} MB"


def test_whitespace_padding_does_not_count_against_the_token_limit(srv):
    """The character bound must count what the tokenizer sees: XLM-R's normalizer collapses runs of
    spaces, so 'hello' + 200,000 spaces + 'world' is a few tokens. Regression: 139392c refused it as
    context_length_exceeded, and with truncate=true cut 'world' off."""
    padded = "hello" + " " * 200_000 + "world"
    with srv.client() as client:
        plain = client.post(EMBEDDINGS, json={"model": "bge-m3", "input": "hello world"}).json()
        for extra in ({}, {"truncate": True}):
            response = client.post(EMBEDDINGS, json={"model": "bge-m3", "input": padded, **extra})
            assert response.status_code == 200, (extra, response.text[:200])
            body = response.json()
            assert body["usage"] == plain["usage"], (extra, body["usage"], plain["usage"])
            np.testing.assert_allclose(body["data"][0]["embedding"], plain["data"][0]["embedding"], atol=1e-5)


def test_whitespace_padding_does_not_change_rerank_scores(srv):
    padded = "hello" + " " * 200_000 + "world"
    problems = []
    with srv.client() as client:
        def rerank(query, document, **extra):
            body = {"model": "bge-reranker-v2-m3", "query": query, "documents": [document], **extra}
            response = client.post(RERANK, json=body)
            assert response.status_code == 200, response.text[:200]
            return response.json()["results"][0]["relevance_score"]

        for name, plain, cut in (
            ("query", rerank("hello world", "a panda"), rerank(padded, "a panda")),
            ("document", rerank("a panda", "hello world", max_chunks_per_doc=1),
             rerank("a panda", padded, max_chunks_per_doc=1)),
        ):
            if abs(plain - cut) > 1e-6:
                problems.append(f"padded {name}: {cut:.6f} against {plain:.6f}")
    assert not problems, problems


def test_odd_content_types_and_empty_bodies_are_400(srv):
    with srv.client() as client:
        for path in (EMBEDDINGS, RERANK):
            for body, headers in ((b"", JSON), (b"null", JSON), (b"[]", JSON), (b'"x"', JSON), (b"1e999", JSON),
                                  (b'{"model": "bge-m3", "input": "x"}', {"content-type": "text/plain"}),
                                  (b"\x00" * 64, {"content-type": "application/octet-stream"})):
                assert_error_shape(client.post(path, content=body, headers=headers), 400)
        # A JSON body sent to the multipart route, and a multipart body with no file.
        assert_error_shape(client.post(TRANSCRIPTIONS, json={"model": "SenseVoiceSmall"}), 400)
        assert_error_shape(client.post(TRANSCRIPTIONS, data={"model": "SenseVoiceSmall"},
                                       files={"other": ("a.wav", io.BytesIO(b"x"))}), 400)
