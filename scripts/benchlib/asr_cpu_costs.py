"""Where a transcription's CPU time goes, piece by piece: the figures behind server/engine/cpu_gate.py and
the sliced CTC head (server/asr/ctc.py's best_path).

For 10 s speech clips through the server's own SenseVoice adapter, loaded on a worker thread as the
server loads it, it prints medians of:

* request preparation per clip, single-threaded: WAV decoding, the speech check, the features;
* the forward pass per clip at batch sizes 1, 2, 4 and 8;
* the CTC head on a batch of 4: the whole logits then log-softmax and arg max (what funasr does)
  against ``best_path`` (a slice of the vocabulary at a time);
* the forward pass per clip (batch of 4) alone, then with one thread beside it doing each kind of
  preparation in a loop: what the passes would cost if preparation shared the cores with them;
* a lone clip through the server, started in this process: when decoding, the speech check, the
  features and the forward pass start and end, and when the answer is back.

    python scripts/asr_cpu_costs.py --size small
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import torch

from benchlib.inputs import speech_clip, wav_bytes
from benchlib.models import build
from benchlib.timing import median_ms, on_thread
from server.background import free_port, serve_in_thread
from server.families import make_settings
from server.engine.batching import model_thread
from server.engine.torch_threads import one_torch_thread
from server.asr import service as transcription
from server.asr.audio import decode_audio
from server.asr.ctc import best_path
from server.asr.model import AsrItem, SenseVoice
from server.asr.vad import has_speech


def run(args) -> None:
    """Every figure of the module's description, printed as it is measured."""
    model_dir = args.model_dir or build("asr", args.size, Path(tempfile.gettempdir()) / f"asr_cpu_costs_{args.size}")

    worker = model_thread("asr")  # the model loads and computes on one thread, as in the server

    model = on_thread(worker, lambda: SenseVoice(model_dir, torch.device("cpu"), torch.float32))
    clips = [speech_clip(10.0, seed) for seed in range(8)]
    wavs = [wav_bytes(clip) for clip in clips]
    # Single-threaded, as request preparation computes them: a torch team on this thread too would
    # make libgomp stop spinning between operators and slow every pass timed below.
    with one_torch_thread():
        items = [model.with_features(AsrItem(clip)) for clip in clips]
    print(f"SenseVoice {args.size if not args.model_dir else model_dir}, float32, {torch.get_num_threads()} "
          f"threads; 10 s clips; medians of {args.repeats}")

    work = {
        "decoding (WAV)": lambda i: decode_audio(wavs[i % 8], max_seconds=60),
        "speech check": lambda i: has_speech(clips[i % 8]),
        "features": lambda i: model.features(clips[i % 8]),
    }
    print("\npreparation per clip, one thread")
    with one_torch_thread():
        for name, fn in work.items():
            print(f"  {name:16s} {median_ms(lambda fn=fn: fn(0), args.repeats):7.1f} ms")

    print("\nforward pass per clip")
    for size in (1, 2, 4, 8):
        ms = on_thread(worker, lambda size=size: median_ms(lambda: model.run_batch(items[:size]), args.repeats))
        print(f"  batch of {size}      {ms / size:7.1f} ms")

    head = model.model.ctc.ctc_lo
    # The encoder output of 4 clips: 4 query frames and the clip's frames each.
    hidden = on_thread(worker, lambda: torch.randn(4, items[0].features.shape[0] + 4, head.in_features))
    whole = on_thread(worker, lambda: median_ms(lambda: torch.log_softmax(head(hidden), dim=-1).argmax(-1),
                                                args.repeats))
    sliced = on_thread(worker, lambda: median_ms(lambda: best_path(head, hidden), args.repeats))
    print(f"\nCTC head ({head.out_features} tokens), batch of 4: whole logits + log-softmax + arg max "
          f"{whole:.1f} ms, a slice at a time {sliced:.1f} ms")

    print("\nforward pass per clip (batch of 4), with one thread beside it")
    for name, fn in {"nothing": None, **work}.items():
        stop = threading.Event()

        def loop(fn=fn) -> None:
            with one_torch_thread():
                i = 0
                while not stop.is_set():
                    fn(i)
                    i += 1

        beside = threading.Thread(target=loop) if fn else None
        if beside:
            beside.start()
        try:
            ms = on_thread(worker, lambda: median_ms(lambda: model.run_batch(items[:4]), args.repeats))
        finally:
            stop.set()
            if beside:
                beside.join()
        print(f"  {name:16s} {ms / 4:7.1f} ms")
    worker.shutdown()

    print(f"\na lone 10 s clip through the server (in this process), ms after the request was sent; "
          f"medians of {3 * args.repeats}")
    for step, (start, end) in lone_timeline(model_dir, wavs[0], 3 * args.repeats).items():
        print(f"  {step:16s} {start:7.1f} -> {end:7.1f}")



def lone_timeline(model_dir: Path, wav: bytes, repeats: int) -> dict[str, tuple[float, float]]:
    """When each step of a lone transcription starts and ends, timed by wrapping the functions the
    server calls for it (decoding, the speech check, the features, the forward pass)."""
    sent: list[float] = []
    spans: dict[str, list[tuple[float, float]]] = {}

    def timed(owner: Any, attribute: str, step: str) -> None:
        fn = getattr(owner, attribute)

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if sent:
                    spans.setdefault(step, []).append((started - sent[-1], time.perf_counter() - sent[-1]))

        setattr(owner, attribute, wrapper)

    timed(transcription, "decode_audio", "decoding")
    timed(transcription, "has_speech", "speech check")
    timed(transcription.TranscriptionService, "_prepare", "features")
    timed(SenseVoice, "run_batch", "forward pass")
    settings = make_settings(embedding_model="none", reranker_model="none", asr_model=str(model_dir),
                        host="127.0.0.1", port=free_port(), log_level="warning")
    with serve_in_thread(settings) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        def post() -> None:
            http.post("/v1/audio/transcriptions", files={"file": ("clip.wav", wav)},
                      data={"model": "SenseVoiceSmall"}).raise_for_status()

        for _ in range(3):
            post()  # warm-up, untimed: nothing is recorded before the first time is sent
        for _ in range(repeats):
            sent.append(time.perf_counter())
            post()
            spans.setdefault("answer", []).append((0.0, time.perf_counter() - sent[-1]))
    return {step: (statistics.median(s for s, _ in times) * 1000, statistics.median(e for _, e in times) * 1000)
            for step, times in spans.items()}
