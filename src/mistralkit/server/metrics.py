"""Prometheus metrics (text format at ``GET /metrics``), in a registry of the app's own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

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

        self._engines: dict[str, dict] = {}
        r.register(_EngineCollector(self))

    def render(self, depths: dict[str, int], engines: dict[str, dict] | None = None) -> bytes:
        for model, depth in depths.items():
            self.queue_depth.labels(model).set(depth)
        self._engines = engines or {}
        return generate_latest(self.registry)


class _EngineCollector:
    """The batched engines' own counters (engines/batch.py ``Stats``), read when /metrics is asked."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self):
        engines = self.metrics._engines
        gauges = {
            "slots": GaugeMetricFamily(
                "mistralkit_slots", "Sequences a model can decode at once (--parallel)", labels=["model"]
            ),
            "busy": GaugeMetricFamily("mistralkit_slots_busy", "Slots holding a running generation", labels=["model"]),
            "waiting": GaugeMetricFamily(
                "mistralkit_requests_waiting", "Requests queued for a free slot", labels=["model"]
            ),
            "prompt_tps": GaugeMetricFamily(
                "mistralkit_prefill_tokens_per_second",
                "Prompt tokens evaluated per second of prefill steps",
                labels=["model"],
            ),
            "decode_tps": GaugeMetricFamily(
                "mistralkit_decode_tokens_per_second",
                "Tokens generated per second of decode steps (all slots together)",
                labels=["model"],
            ),
        }
        counters = {
            "steps": CounterMetricFamily("mistralkit_engine_steps", "llama_decode calls", labels=["model"]),
            "prompt_tokens": CounterMetricFamily(
                "mistralkit_engine_prompt_tokens", "Prompt tokens evaluated (cache hits excluded)", labels=["model"]
            ),
            "generated_tokens": CounterMetricFamily(
                "mistralkit_engine_generated_tokens", "Tokens sampled", labels=["model"]
            ),
            "drafted_tokens": CounterMetricFamily(
                "mistralkit_engine_drafted_tokens", "Speculative decoding: tokens proposed and verified",
                labels=["model"]),
            "accepted_tokens": CounterMetricFamily(
                "mistralkit_engine_accepted_tokens", "Speculative decoding: proposed tokens kept", labels=["model"]),
        }
        unspeculated = CounterMetricFamily(
            "mistralkit_engine_unspeculated_requests",
            "Requests that asked for speculative decoding and ran without it, by reason", labels=["model", "reason"])
        seconds = CounterMetricFamily(
            "mistralkit_engine_seconds", "Time in llama.cpp by phase", labels=["model", "phase"]
        )
        for model, st in engines.items():
            for key in ("slots", "busy", "waiting"):
                gauges[key].add_metric([model], st[key])
            gauges["prompt_tps"].add_metric([model], st["prompt_tokens"] / st["prefill_s"] if st["prefill_s"] else 0.0)
            gauges["decode_tps"].add_metric([model], st["generated_tokens"] / st["decode_s"] if st["decode_s"] else 0.0)
            for key, family in counters.items():
                family.add_metric([model], st.get(key, 0))
            for reason, count in st.get("unspeculated", {}).items():
                unspeculated.add_metric([model, reason], count)
            seconds.add_metric([model, "prefill"], st["prefill_s"])
            seconds.add_metric([model, "decode"], st["decode_s"])
        yield from gauges.values()
        yield from counters.values()
        yield unspeculated
        yield seconds
