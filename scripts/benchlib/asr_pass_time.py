"""How long one SenseVoice forward pass takes as it fills the audio budget: the figure behind the
choice of bounding passes by cost (``--asr-max-batch-seconds``) rather than by time.

A request that arrives while a pass runs waits for it, however fair the queue is. This times the
server's own adapter, on its own worker thread, over 1, 2, 4 and 8 segments of 30 s (the longest
piece long audio is cut into; 8 of them fill the default 240 s budget) and prints each pass's
seconds and its cost per audio second.

    python scripts/asr_pass_time.py --size full
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from benchlib.inputs import speech_clip
from benchlib.models import build
from benchlib.timing import median_ms, on_thread
from server.engine.batching import model_thread
from server.engine.torch_threads import one_torch_thread
from server.asr.model import AsrItem, SenseVoice

SEGMENT_S = 30.0


def run(args) -> None:
    """One pass over 1, 2, 4 and 8 segments, timed, as a Markdown table."""
    model_dir = build("asr", args.size, Path(tempfile.gettempdir()) / f"asr_pass_time_{args.size}")
    worker = model_thread("asr")  # loads and computes on one thread, as in the server

    model = on_thread(worker, lambda: SenseVoice(model_dir, torch.device("cpu"), torch.float32))
    with one_torch_thread():  # features single-threaded, as request preparation computes them
        items = [model.with_features(AsrItem(speech_clip(SEGMENT_S, seed))) for seed in range(8)]
    print(f"SenseVoice {args.size}, float32, {torch.get_num_threads()} threads; {SEGMENT_S:g} s segments; "
          f"medians of {args.repeats}")
    print("| segments | audio s | pass s | ms per audio s |\n|---:|---:|---:|---:|")
    for count in (1, 2, 4, 8):
        ms = on_thread(worker, lambda count=count: median_ms(lambda: model.run_batch(items[:count]), args.repeats))
        audio = count * SEGMENT_S
        print(f"| {count} | {audio:g} | {ms / 1000:.2f} | {ms / audio:.1f} |")
    worker.shutdown()

