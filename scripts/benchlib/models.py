"""The model directories a benchmark runs on: random weights of a named size (compute does not depend
on their values) built here, or real ones given with --model-dir KIND=PATH."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from server.compute.tiny_xlmr import XLMR_SIZES
from server.asr.tiny import SENSEVOICE_SIZES

KINDS = ("embedding", "reranker", "asr")


def build(kind: str, size: str, root: Path) -> Path:
    from server.compute.tiny_xlmr import build_tiny_bge_m3, build_tiny_reranker
    from server.asr.tiny import build_tiny_sensevoice

    if kind == "asr":
        return build_tiny_sensevoice(root / kind, **SENSEVOICE_SIZES[size])
    builder = build_tiny_bge_m3 if kind == "embedding" else build_tiny_reranker
    # The builder's default initializer (0.2) saturates a deep model; 0.02 is XLM-R's own.
    return builder(root / kind, initializer_range=0.02, **XLMR_SIZES[size])


def each_kind(args, bench_kind: Callable, print_kind: Callable, save: Callable) -> list[dict]:
    """``bench_kind(kind, model_dir, args)`` for each of ``--models``, on the ``--model-dir`` given
    or a model built at ``--size``; each result printed and the results saved after every model, so
    a long run cut short keeps what it measured."""
    given = dict(item.split("=", 1) for item in args.model_dir)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.models.split(","):
            model_dir = Path(given[kind]) if kind in given else build(kind, args.size, Path(tmp))
            res = bench_kind(kind, model_dir, args)
            res["size"] = "given" if kind in given else args.size
            results.append(res)
            print_kind(res, args)
            save(results, args)
    return results
