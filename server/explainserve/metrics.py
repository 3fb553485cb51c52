"""Every Prometheus metric, defined once (prefix explainserve_, seconds, counters end in _total).

They mirror Triton's nv_inference_* set; queue_depth is the gauge an autoscaler reads.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

REQUESTS = Counter(
    "explainserve_requests", "Finished RPCs by status code.", ["rpc", "model", "method", "code"])
REQUEST_DURATION = Histogram(
    "explainserve_request_duration_seconds", "Wall time of an RPC, end to end.", ["rpc", "model"],
    buckets=_LATENCY_BUCKETS)
QUEUE_DURATION = Histogram(
    "explainserve_queue_duration_seconds", "Time a job waited before its first row ran.",
    ["model"], buckets=_LATENCY_BUCKETS)
COMPUTE_DURATION = Histogram(
    "explainserve_compute_duration_seconds", "Device time of one batch.", ["model", "device"],
    buckets=_LATENCY_BUCKETS)
QUEUE_DEPTH = Gauge(
    "explainserve_queue_depth", "Jobs waiting for a device.", ["model"])
BATCH_SIZE = Histogram(
    "explainserve_batch_size", "Rows per device pass.", ["model"],
    buckets=(1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256))
REJECTED = Counter(
    "explainserve_rejected", "Jobs refused or dropped before reaching a device.", ["reason"])
DEVICE_MEMORY = Gauge(
    "explainserve_device_memory_bytes", "Memory allocated on the device by tensors.", ["device"])
WORKER_RESTARTS = Counter(
    "explainserve_worker_restarts", "Workers replaced after a fatal error.", ["device"])
