"""What the batcher reports: per forward pass, per request, and its running totals (read by
/metrics, server/metrics.py, and by tests)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class BatchRecord:
    """What one forward pass looked like, for metrics."""

    size: int
    padded_cost: int
    real_cost: int
    seconds: float
    waits: list[tuple[str, str, float]] = field(default_factory=list)  # (priority, tenant, seconds queued to computed)


@dataclass
class RequestRecord:
    """How one request's deadline went, for metrics: ``met`` None when its caller left first."""

    met: bool | None
    predicted_s: float | None  # forecast at admission, seconds to completion
    actual_s: float | None  # seconds to completion (None: dropped or cancelled, not completed)


@dataclass
class BatcherStats:
    """Monotonic counters; read by /metrics and by tests."""

    submitted: int = 0
    computed: int = 0
    dropped: int = 0
    rejected: int = 0
    batches: int = 0
    failed: int = 0
    oom_splits: int = 0
    non_finite: int = 0  # items whose output was NaN or infinite (failed too)
    real_cost: int = 0  # sum of item costs computed
    padded_cost: int = 0  # sum of rows x costliest row over batches: real / padded = padding efficiency
    busy_seconds: float = 0.0  # time in forward passes: busy / wall time = how busy the worker was
    fixed_cost: float = 0.0  # not a counter: the current estimate of a pass's fixed cost, in cost units
    # Requests, not items:
    refused_deadline: int = 0  # refused at admission: the forecast said they would be late
    refused_queue_full: int = 0
    deadline_met: int = 0  # completed by their deadline
    deadline_missed: int = 0  # accepted, then late: dropped as doomed, timed out, or completed late
    doomed: int = 0  # of the missed, failed early with their queued items dropped
