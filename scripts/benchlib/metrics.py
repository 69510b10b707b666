"""What a server says about its own work: totals scraped from its /metrics."""

from __future__ import annotations

import httpx


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
