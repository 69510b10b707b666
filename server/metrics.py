"""Prometheus metrics, one registry per app (so several apps can live in one process, as in tests)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from server.engine.records import BatchRecord, BatcherStats, RequestRecord
from server.family import Usage

_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_TOKEN_BUCKETS = (64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)
_RATIO_BUCKETS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# How far a request's completion fell from the forecast at its admission, early or late (a
# histogram of signed values would have no _sum: the mean error would be lost).
_ERROR_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30)


# inference_items_total's outcomes: BatcherStats counters of the same names.
ITEM_OUTCOMES = ("submitted", "computed", "dropped", "rejected", "failed", "non_finite", "oom_splits")


class QueueReport(Protocol):
    """What a model's batcher reports (server.engine.batching.Batcher): read at scrape time."""

    @property
    def queue_depth(self) -> int: ...

    def queue_depth_by_priority(self) -> dict[str, int]: ...

    @property
    def stats(self) -> BatcherStats: ...


class _BatcherCollector(Collector):
    """Reads the batchers' own counters at scrape time: one source of truth, no double bookkeeping."""

    def __init__(self) -> None:
        self.batchers: dict[str, QueueReport] = {}

    def collect(self) -> Iterator:
        depth = GaugeMetricFamily("inference_queue_depth", "Items waiting in the model's queue.", labels=["model"])
        by_priority = GaugeMetricFamily(
            "inference_queue_depth_by_priority", "Items waiting in the model's queue, by request priority.",
            labels=["model", "priority"],
        )
        items = CounterMetricFamily(
            "inference_items", "Batcher items by outcome (submitted, computed, dropped, rejected, failed; of the "
            "failed, non_finite: NaN or infinite outputs, a float16 overflow).",
            labels=["model", "outcome"],
        )
        fixed = GaugeMetricFamily(
            "inference_batch_fixed_cost", "Learnt fixed cost of a forward pass, in cost units (tokens, or "
            "audio frames); batches of short items may pad up to a share of it.", labels=["model"],
        )
        # Padding efficiency over any window is rate(real) / rate(padded): totals, not a per-batch ratio.
        cost = CounterMetricFamily(
            "inference_batch_cost", "Cost (tokens, or audio frames) run in forward passes: real, or padded as "
            "computed.", labels=["model", "kind"],
        )
        refused = CounterMetricFamily(
            "inference_requests_refused", "Requests refused at admission with 503 and Retry-After, by reason: "
            "deadline (the batcher forecast it would miss its deadline), queue_full (--max-queue items waiting).",
            labels=["model", "reason"],
        )
        deadlines = CounterMetricFamily(
            "inference_request_deadlines", "Accepted requests by how their deadline went: met (answered in time), "
            "missed (failed early as unable to make it, timed out, or answered late); missed_dropped_early: of "
            "the missed, those failed before their deadline with their remaining work dropped.",
            labels=["model", "outcome"],
        )
        busy = CounterMetricFamily(
            "inference_busy_seconds", "Seconds the model spent in forward passes; its rate is the model's "
            "utilization (1: never idle).", labels=["model"],
        )
        for model, batcher in self.batchers.items():
            depth.add_metric([model], batcher.queue_depth)
            for priority, count in batcher.queue_depth_by_priority().items():
                by_priority.add_metric([model, priority], count)
            s = batcher.stats
            for outcome in ITEM_OUTCOMES:
                items.add_metric([model, outcome], getattr(s, outcome))
            cost.add_metric([model, "real"], s.real_cost)
            cost.add_metric([model, "padded"], s.padded_cost)
            fixed.add_metric([model], s.fixed_cost)
            busy.add_metric([model], s.busy_seconds)
            refused.add_metric([model, "deadline"], s.refused_deadline)
            refused.add_metric([model, "queue_full"], s.refused_queue_full)
            deadlines.add_metric([model, "met"], s.deadline_met)
            deadlines.add_metric([model, "missed"], s.deadline_missed)
            deadlines.add_metric([model, "missed_dropped_early"], s.doomed)
        yield depth
        yield by_priority
        yield items
        yield cost
        yield fixed
        yield refused
        yield deadlines
        yield busy


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._batchers = _BatcherCollector()
        self.registry.register(self._batchers)
        self.batch_size = Histogram(
            "inference_batch_size", "Items per forward pass.", ["model"], buckets=_SIZE_BUCKETS, registry=self.registry
        )
        self.batch_cost = Histogram(
            "inference_batch_tokens", "Padded cost (tokens) per forward pass.", ["model"],
            buckets=_TOKEN_BUCKETS, registry=self.registry,
        )
        self.batch_padding = Histogram(
            "inference_batch_padding_ratio", "Share of a batch's padded cost that is padding.", ["model"],
            buckets=_RATIO_BUCKETS, registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "inference_batch_seconds", "Seconds per forward pass.", ["model"],
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.queue_wait = Histogram(
            "inference_queue_wait_seconds", "Seconds from an item queued to its forward pass done, by request "
            "priority and tenant (key-N: the N-th configured API key; none: an open server).",
            ["model", "priority", "tenant"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.prediction_error = Histogram(
            "inference_deadline_prediction_error_seconds", "Accepted requests answered: how many seconds from the "
            "batcher's forecast at admission their completion fell, early or late (the forecast is for the deadline "
            "order; the fair order, run while there is slack, may finish a request later, up to its aim).", ["model", "direction"], buckets=_ERROR_BUCKETS,
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "inference_request_seconds", "Request latency by route and status.", ["route", "status"],
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )
        self.tokens = Counter(
            "inference_input_tokens", "Input tokens of the requests answered, per model (for audio, the encoder's "
            "input frames).", ["model"], registry=self.registry
        )
        self.output_tokens = Counter(
            "inference_output_tokens", "Tokens the model produced for the requests answered (transcription's text "
            "tokens; none for embeddings and rerank).", ["model"], registry=self.registry
        )

    def count(self, model: str, usage: Usage) -> None:
        self.tokens.labels(model).inc(usage.input_tokens)
        if usage.output_tokens:
            self.output_tokens.labels(model).inc(usage.output_tokens)

    def track(self, model: str, batcher: QueueReport) -> None:
        self._batchers.batchers[model] = batcher

    def batch_observer(self, model: str):
        def observe(record: BatchRecord) -> None:
            self.batch_size.labels(model).observe(record.size)
            self.batch_cost.labels(model).observe(record.padded_cost)
            self.batch_padding.labels(model).observe(1 - record.real_cost / record.padded_cost)
            self.batch_seconds.labels(model).observe(record.seconds)
            for priority, tenant, seconds in record.waits:
                self.queue_wait.labels(model, priority, tenant).observe(seconds)

        return observe

    def request_observer(self, model: str):
        def observe(record: RequestRecord) -> None:
            if record.predicted_s is not None and record.actual_s is not None:
                error = record.actual_s - record.predicted_s
                self.prediction_error.labels(model, "late" if error > 0 else "early").observe(abs(error))

        return observe
