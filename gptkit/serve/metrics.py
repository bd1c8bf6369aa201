"""What GET /metrics reports, in Prometheus' text format (version 0.0.4), written out by hand: a few
counters, two gauges and two histograms need no client library.

    gptkit_requests_total{endpoint,status}        requests answered, by endpoint and HTTP status
    gptkit_prompt_tokens_total                    prompt tokens read (each choice's prompt once)
    gptkit_generated_tokens_total                 tokens generated
    gptkit_queue_depth                            rows waiting for a batch slot
    gptkit_running_rows                           rows the engine is decoding
    gptkit_model_ready                            1 once the model is loaded
    gptkit_request_duration_seconds{endpoint}     request latency, to the last byte (histogram)
    gptkit_time_to_first_token_seconds            from arrival to the first generated text (histogram)

Everything is updated on the event loop's thread, so nothing here needs a lock.
"""

from __future__ import annotations

from collections import defaultdict

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Histogram:
    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS):
        self.buckets = buckets
        self.counts = [0] * len(buckets)  # per bucket, not cumulative; summed when rendered
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.total += 1
        self.sum += value
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
                break

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out, cumulative = [], 0
        for bound, count in zip(self.buckets, self.counts):
            cumulative += count
            out.append(f'{name}_bucket{{{labels}{sep}le="{bound}"}} {cumulative}')
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.total}')
        braces = f"{{{labels}}}" if labels else ""
        out += [f"{name}_sum{braces} {self.sum:.6f}", f"{name}_count{braces} {self.total}"]
        return out


class Metrics:
    def __init__(self):
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.prompt_tokens = 0
        self.generated_tokens = 0
        self.latency: dict[str, Histogram] = defaultdict(Histogram)
        self.first_token = Histogram()

    def request_done(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests[(endpoint, status)] += 1
        self.latency[endpoint].observe(seconds)

    def render(self, queue_depth: int, running: int, ready: bool) -> str:
        lines = [
            "# HELP gptkit_requests_total Requests answered, by endpoint and HTTP status.",
            "# TYPE gptkit_requests_total counter",
        ]
        for (endpoint, status), count in sorted(self.requests.items()):
            lines.append(f'gptkit_requests_total{{endpoint="{endpoint}",status="{status}"}} {count}')
        lines += [
            "# HELP gptkit_prompt_tokens_total Prompt tokens read.",
            "# TYPE gptkit_prompt_tokens_total counter",
            f"gptkit_prompt_tokens_total {self.prompt_tokens}",
            "# HELP gptkit_generated_tokens_total Tokens generated.",
            "# TYPE gptkit_generated_tokens_total counter",
            f"gptkit_generated_tokens_total {self.generated_tokens}",
            "# HELP gptkit_queue_depth Rows waiting for a batch slot.",
            "# TYPE gptkit_queue_depth gauge",
            f"gptkit_queue_depth {queue_depth}",
            "# HELP gptkit_running_rows Rows the engine is decoding.",
            "# TYPE gptkit_running_rows gauge",
            f"gptkit_running_rows {running}",
            "# HELP gptkit_model_ready 1 once the model is loaded and requests are served.",
            "# TYPE gptkit_model_ready gauge",
            f"gptkit_model_ready {int(ready)}",
            "# HELP gptkit_request_duration_seconds Request latency, to the last byte.",
            "# TYPE gptkit_request_duration_seconds histogram",
        ]
        for endpoint, histogram in sorted(self.latency.items()):
            lines += histogram.lines("gptkit_request_duration_seconds", f'endpoint="{endpoint}"')
        lines += [
            "# HELP gptkit_time_to_first_token_seconds From a request's arrival to its first generated text.",
            "# TYPE gptkit_time_to_first_token_seconds histogram",
            *self.first_token.lines("gptkit_time_to_first_token_seconds"),
        ]
        return "\n".join(lines) + "\n"
