"""Prometheus metrics (text format at ``GET /metrics``), in a registry of the app's own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 160)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("mistralkit_requests", "HTTP requests by route and status",
                                ["route", "status"], registry=r)
        self.errors = Counter("mistralkit_errors", "Error responses by status", ["status"], registry=r)
        self.tokens = Counter("mistralkit_tokens", "Tokens processed", ["model", "direction"], registry=r)
        self.queue_depth = Gauge("mistralkit_queue_depth", "Requests running or waiting per model",
                                 ["model"], registry=r)
        self.ttft = Histogram("mistralkit_time_to_first_token_seconds", "Time to first token (queue included)",
                              ["model"], buckets=LATENCY_BUCKETS, registry=r)
        self.latency = Histogram("mistralkit_request_duration_seconds", "Request latency by route",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)

    def render(self, depths: dict[str, int]) -> bytes:
        for model, depth in depths.items():
            self.queue_depth.labels(model).set(depth)
        return generate_latest(self.registry)
