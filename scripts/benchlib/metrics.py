"""What a server says about its own work, scraped from its /metrics: its batchers' totals, the
forward passes it ran over a phase, and its deadline accounting (refusals, deadlines met and missed,
how far its forecasts fell)."""

from __future__ import annotations

import math

import httpx

from benchlib.endpoint import Endpoint


def scrape_counters(url: str) -> dict[str, float]:
    """The batchers' totals from /metrics: computed items, forward passes and their seconds, cost."""
    from prometheus_client.parser import text_string_to_metric_families

    totals = dict.fromkeys(("computed", "batches", "batch_seconds", "real", "padded"), 0.0)
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=30).text):
        for s in family.samples:
            if s.name == "inference_items_total" and s.labels.get("outcome") == "computed":
                totals["computed"] += s.value
            elif s.name == "inference_batch_size_count":
                totals["batches"] += s.value
            elif s.name == "inference_batch_seconds_sum":
                totals["batch_seconds"] += s.value
            elif s.name == "inference_batch_cost_total":
                totals[s.labels["kind"]] += s.value
    return totals


def pass_histogram(url: str) -> dict[float, float]:
    """inference_batch_seconds' cumulative bucket counts by bound, over the server's models."""
    from prometheus_client.parser import text_string_to_metric_families

    counts: dict[float, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=30).text):
        for s in family.samples:
            if s.name == "inference_batch_seconds_bucket":
                bound = float(s.labels["le"])
                counts[bound] = counts.get(bound, 0.0) + s.value
    return counts


def longest_pass_bound(before: dict[float, float], after: dict[float, float]) -> float | None:
    """The smallest bucket bound that holds every pass run between two scrapes (inf: past the last)."""
    delta = {bound: count - before.get(bound, 0.0) for bound, count in after.items()}
    total = delta.get(math.inf, 0.0)
    return min((b for b, count in delta.items() if count >= total), default=None) if total else None


class PassMeter:
    """The forward passes a server ran between ``start`` and ``stop``; a peer has no /metrics: none."""

    def __init__(self, ep: Endpoint) -> None:
        self.ep, self.ours = ep, ep.counters is not None

    def start(self) -> None:
        if self.ours:
            self.counters, self.buckets = self.ep.counters(), pass_histogram(self.ep.base_url)

    def stop(self) -> dict:
        if not self.ours:
            return {"bulk passes": None, "mean bulk pass ms": None, "longest pass <= ms": None}
        after = self.ep.counters()
        passes = after["batches"] - self.counters["batches"]
        seconds = after["batch_seconds"] - self.counters["batch_seconds"]
        longest = longest_pass_bound(self.buckets, pass_histogram(self.ep.base_url))
        return {"bulk passes": int(passes), "mean bulk pass ms": 1000 * seconds / passes if passes else None,
                "longest pass <= ms": None if longest is None else 1000 * longest}


def deadline_metrics(url: str) -> dict:
    """Totals of the deadline families (None where the server has no such family), the queue depth,
    and ``activity``: every item counted and request refused so far (it stops moving when the server
    has nothing left to do)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict = {"refused deadline": None, "refused queue_full": None, "deadlines met": None,
                 "deadlines missed": None, "deadlines missed_dropped_early": None, "error late sum": None,
                 "error early sum": None, "error count": None, "error buckets": None, "queue depth": None,
                 "503 count": None, "503 within 100 ms": None, "activity": 0.0}
    try:
        families = list(text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text))
    except Exception:
        return out
    for family in families:
        if family.name == "inference_requests_refused":
            out["refused deadline"], out["refused queue_full"] = 0.0, 0.0
        elif family.name == "inference_request_deadlines":
            out["deadlines met"], out["deadlines missed"], out["deadlines missed_dropped_early"] = 0.0, 0.0, 0.0
        elif family.name == "inference_deadline_prediction_error_seconds":
            out["error count"], out["error buckets"] = 0.0, {}
            out["error late sum"], out["error early sum"] = 0.0, 0.0
        elif family.name == "inference_queue_depth":
            out["queue depth"] = 0.0
        elif family.name == "inference_request_seconds":
            out["503 count"], out["503 within 100 ms"] = 0.0, 0.0
        for s in family.samples:
            if s.name == "inference_requests_refused_total" and f"refused {s.labels.get('reason')}" in out:
                out[f"refused {s.labels['reason']}"] += s.value
                out["activity"] += s.value
            elif s.name == "inference_request_deadlines_total" and f"deadlines {s.labels.get('outcome')}" in out:
                out[f"deadlines {s.labels['outcome']}"] += s.value
            elif s.name == "inference_deadline_prediction_error_seconds_sum":
                out[f"error {s.labels.get('direction')} sum"] += s.value
            elif s.name == "inference_deadline_prediction_error_seconds_count":
                out["error count"] += s.value
            elif s.name == "inference_deadline_prediction_error_seconds_bucket":  # |error|, both directions
                bound = float(s.labels["le"])
                out["error buckets"][bound] = out["error buckets"].get(bound, 0.0) + s.value
            elif s.name == "inference_queue_depth":
                out["queue depth"] += s.value
            elif s.name == "inference_request_seconds_count" and s.labels.get("status") == "503":
                out["503 count"] += s.value
            elif (s.name == "inference_request_seconds_bucket" and s.labels.get("status") == "503"
                  and float(s.labels["le"]) == 0.1):
                out["503 within 100 ms"] += s.value
            elif s.name == "inference_items_total":
                out["activity"] += s.value
    return out


def metrics_delta(before: dict | None, after: dict | None) -> dict:
    """The server's deadline accounting over a phase: counts; the prediction error's mean (signed:
    late minus early) and mean absolute, the bucket the median absolute error falls in, and the
    share within 0.5 s and 1 s."""
    keys = ("refused deadline", "refused queue_full", "deadlines met", "deadlines missed",
            "deadlines missed_dropped_early")
    out = dict.fromkeys((*keys, "server: 503s within 100 ms", "prediction error mean s", "prediction |error| mean s", "prediction |error| median in",
                         "within 0.5 s", "within 1 s"))
    if before is None or after is None:
        return out
    diff = lambda k: None if after[k] is None else after[k] - (before[k] or 0.0)  # noqa: E731
    out.update({k: diff(k) for k in keys})
    answered_503 = diff("503 count")
    if answered_503:  # the refusals' own time inside the server, without the client's or the network's
        out["server: 503s within 100 ms"] = diff("503 within 100 ms") / answered_503
    count = diff("error count")
    if not count:
        return out
    late, early = diff("error late sum"), diff("error early sum")
    out["prediction error mean s"] = (late - early) / count
    out["prediction |error| mean s"] = (late + early) / count
    cumulative = sorted((b, n - (before["error buckets"] or {}).get(b, 0.0)) for b, n in after["error buckets"].items())
    lower = 0.0
    for bound, n in cumulative:  # the first bucket holding half the observations
        if n >= count / 2:
            out["prediction |error| median in"] = f"({lower:g}, {bound:g}] s"
            break
        lower = bound
    at = dict(cumulative)
    for width in (0.5, 1.0):
        if width in at:
            out[f"within {width:g} s"] = at[width] / count
    return out
