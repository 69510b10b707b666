"""Streamed transcription of a long recording: how soon the first text arrives against the whole
answer, and what word timestamps yield and cost.

On one recording (--stream-minutes of real speech, the tests' espeak-ng recording tiled; cut at its
pauses into segments by the server), this server, started as its own process, is asked in turn,
--stream-repeats times:

* whole: ``response_format=json``: seconds until the answer;
* streamed: ``stream=true``: seconds until the first ``transcript.text.delta`` that carries text,
  and until ``transcript.text.done`` (the streamed text is checked to equal the whole answer's);
* words: ``verbose_json`` with ``timestamp_granularities[]=word``: seconds until the answer, and
  words per second of audio.

Each figure is the median of the repeats, every repeat's beside it. Random weights (--size) give
meaningless words, so words per second only count what the alignment yields; pass a real model
(--model-dir asr=models/SenseVoiceSmall) for a figure that means something.

    python scripts/bench_stream.py --size small
    python scripts/bench.py --stream --size small
    python scripts/bench_stream.py --model-dir asr=models/SenseVoiceSmall --stream-minutes 10 --out stream.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from benchlib.inputs import speech_clip, wav_bytes
from benchlib.models import build
from benchlib.our_server import our_server
from server.asr.audio import SAMPLE_RATE

MODEL = "SenseVoiceSmall"
PATH = "/v1/audio/transcriptions"


def whole(http: httpx.Client, audio: bytes, **fields) -> tuple[float, dict]:
    started = time.perf_counter()
    response = http.post(PATH, files={"file": ("talk.wav", audio)}, data={"model": MODEL, **fields})
    response.raise_for_status()
    return time.perf_counter() - started, response.json()


def streamed(http: httpx.Client, audio: bytes) -> dict:
    """Seconds to the first delta with text and to the done event; the text and the delta count."""
    started = time.perf_counter()
    first_text, deltas, done = None, 0, None
    with http.stream("POST", PATH, files={"file": ("talk.wav", audio)},
                     data={"model": MODEL, "stream": "true"}) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line.removeprefix("data: "))
            if event["type"] == "transcript.text.delta":
                deltas += 1
                if first_text is None and event["delta"]:
                    first_text = time.perf_counter() - started
            elif event["type"] == "transcript.text.done":
                done = (time.perf_counter() - started, event["text"])
            else:
                raise RuntimeError(f"the stream failed: {event}")
    if done is None:
        raise RuntimeError("the stream ended without transcript.text.done")
    return {"first_text_s": first_text, "done_s": done[0], "text": done[1], "deltas": deltas}


def measure(base_url: str, audio: bytes, seconds: float, repeats: int) -> dict:
    rounds = []
    with httpx.Client(base_url=base_url, timeout=3600) as http:
        whole(http, wav_bytes(speech_clip(5.0, 0)))  # warm-up: the first request pays one-off costs
        for _ in range(repeats):
            whole_s, answer = whole(http, audio)
            stream = streamed(http, audio)
            words_s, verbose = whole(http, audio, response_format="verbose_json",
                                     **{"timestamp_granularities[]": ["word", "segment"]})
            rounds.append({
                "whole_s": whole_s, "first_text_s": stream["first_text_s"], "stream_done_s": stream["done_s"],
                "deltas": stream["deltas"], "segments": len(verbose["segments"]),
                "same_text": stream["text"] == answer["text"], "verbose_words_s": words_s,
                "words": len(verbose["words"]), "words_per_audio_s": len(verbose["words"]) / seconds,
            })
    return {"audio_s": seconds, "rounds": rounds}


def report(result: dict) -> str:
    rounds = result["rounds"]

    def cell(key: str, fmt: str = "{:.2f}") -> str:
        values = [r[key] for r in rounds if r[key] is not None]
        if not values:
            return "-"
        median = fmt.format(statistics.median(values))
        return median if len(values) == 1 else f"{median} ({', '.join(fmt.format(v) for v in values)})"

    firsts = [r["first_text_s"] for r in rounds if r["first_text_s"] is not None]
    share = f"{statistics.median(firsts) / statistics.median(r['whole_s'] for r in rounds):.1%}" if firsts else "-"
    lines = [
        f"audio: {result['audio_s'] / 60:.1f} min, {rounds[0]['segments']} segments, "
        f"{rounds[0]['deltas']} deltas; streamed text equals the whole answer: {all(r['same_text'] for r in rounds)}",
        "",
        "| figure | median (each repeat) |",
        "|---|---|",
        f"| whole answer, json (s) | {cell('whole_s')} |",
        f"| first streamed text (s) | {cell('first_text_s')} |",
        f"| first streamed text / whole answer | {share} |",
        f"| stream done (s) | {cell('stream_done_s')} |",
        f"| verbose_json with words (s) | {cell('verbose_words_s')} |",
        f"| words | {cell('words', '{:.0f}')} |",
        f"| words per second of audio | {cell('words_per_audio_s')} |",
    ]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stream-minutes", type=float, default=10, help="length of the recording, in minutes")
    parser.add_argument("--stream-repeats", type=int, default=3, help="times each request is measured")


def run(args) -> None:
    given = dict(item.split("=", 1) for item in args.model_dir)
    clip = speech_clip(args.stream_minutes * 60, seed=7)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(given["asr"]) if "asr" in given else build("asr", args.size, Path(tmp))
        with our_server("asr", model_dir, batch_size=args.max_batch_size, dtype=args.dtype, name="server") as ep:
            result = measure(ep.base_url, wav_bytes(clip), len(clip) / SAMPLE_RATE, args.stream_repeats)
    result["size"] = "given" if "asr" in given else args.size
    print(f"\n## Streamed transcription ({result['size']}, dtype {args.dtype})\n")
    print(report(result))
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, **result}, indent=2))
