"""What a server says about its own work, scraped from its /metrics: its batchers' totals, and the
forward passes it ran over a phase."""

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
