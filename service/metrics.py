"""Prometheus metrics. Names follow the conventions: `dlr_` prefix, `_total`, `_seconds`, bounded labels."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, multiprocess

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"


def registry() -> CollectorRegistry:
    """What /metrics shows: this process's metrics, or with several workers all of theirs added up."""
    if MULTIPROC_DIR not in os.environ:
        return REGISTRY
    combined = CollectorRegistry()
    multiprocess.MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
    return combined


def prepare_multiprocess_dir(path: Path) -> None:
    """Clear the shared metrics directory of earlier runs' files before the workers start (they would
    count twice), keeping this process's own: it may already have opened them."""
    path.mkdir(parents=True, exist_ok=True)
    mine = f"_{os.getpid()}.db"
    for leftover in path.glob("*.db"):
        if not leftover.name.endswith(mine):
            leftover.unlink()


def worker_stopped() -> None:
    """Drop this worker's live gauges from the shared directory (`livesum` must not count the dead)."""
    if MULTIPROC_DIR in os.environ:
        multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def forget(gauge: Gauge, *labels: str) -> None:
    """Stop showing a label set: removed from this process's gauge, or zeroed where several processes share
    the metrics (prometheus_client cannot remove labels there)."""
    if MULTIPROC_DIR in os.environ:
        gauge.labels(*labels).set(0)
    else:
        gauge.remove(*labels)


_children: dict[tuple[Any, ...], Any] = {}


def child(metric: Any, *labels: str) -> Any:
    """`metric.labels(*labels)`, looked up once per label set: on the ingest path, prometheus_client's
    labels() (a lock and a validation per call) costs more than the status engine."""
    key = (metric, *labels)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*labels)
    return found


REPORTS = Counter(
    "dlr_reports_received_total",
    "Delivery reports received, by dialect and outcome",
    ["dialect", "outcome"],  # outcome: applied, duplicate, stale, after_final, unmapped, invalid
)
TRANSITIONS = Counter(
    "dlr_status_transitions_total", "Message status changes, by from and to status", ["from_status", "to_status"]
)
REJECTED = Counter("dlr_transitions_rejected_total", "Reports not applied, by reason", ["reason"])
QUARANTINED = Counter("dlr_quarantined_total", "Payloads kept in the quarantine, by dialect", ["dialect"])
INGEST_SECONDS = Histogram(
    "dlr_ingest_duration_seconds",
    "Time from receiving a report to its commit",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
DELIVERY_SECONDS = Histogram(
    "dlr_delivery_seconds",
    "Time from sending to DELIVRD",
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 43200, 86400),
)
REPLAYED = Counter("dlr_quarantine_replayed_total", "Quarantined payloads replayed successfully")
SWEEP_RUNS = Counter("dlr_sweep_runs_total", "Expiry sweep passes, by outcome", ["outcome"])  # success, error
SWEEP_SECONDS = Histogram(
    "dlr_sweep_duration_seconds",
    "Duration of one expiry sweep pass",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 30, 60, 120, 300),
)
SWEEP_RESOLVED = Counter(
    "dlr_sweep_resolved_total", "Messages resolved by the expiry sweep, by resulting status", ["status"]
)
# multiprocess_mode matters only with several workers: the newest sweep, the largest open count.
SWEEP_LAST_SUCCESS = Gauge(
    "dlr_sweep_last_success_timestamp_seconds",
    "Unix time of the last successful expiry sweep pass",
    multiprocess_mode="max",
)
OPEN_MESSAGES = Gauge(
    "dlr_open_messages", "Messages not yet final (as of the last sweep pass)", multiprocess_mode="max"
)
HTTP_REQUESTS = Counter(
    "dlr_http_requests_total", "HTTP requests, by route template, method and status", ["route", "method", "status"]
)
HTTP_SECONDS = Histogram(
    "dlr_http_request_duration_seconds",
    "HTTP request duration, by route template and method",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DB_POOL = Gauge(
    "dlr_db_pool_connections",
    "Database pool connections, by state (in_use, idle, max)",
    ["state"],
    multiprocess_mode="livesum",
)
DB_ERRORS = Counter(
    "dlr_database_errors_total", "Operations refused with 503 because the database was unavailable", ["operation"]
)
AUTH_FAILURES = Counter(
    "dlr_auth_failures_total", "Requests refused for missing or wrong credentials, by kind", ["kind"]
)  # kind: webhook, signature, api_key, scope (code 9), disabled (code 14)
RETENTION_PRUNED = Counter(
    "dlr_retention_pruned_total",
    "Rows deleted past DLR_RETENTION, by what (messages, with their history; quarantine; tasks)",
    ["what"],
)
API_REQUESTS = Counter("dlr_api_requests_total", "API requests let through, by API key name (DLR_API_KEYS)", ["key"])
RATE_LIMITED = Counter(
    "dlr_rate_limited_total", "API requests refused by DLR_RATE_LIMIT (code 30), by API key name", ["key"]
)
EVENTS = Counter(
    "dlr_events_total",
    "Change events committed to the event feed, by source (a dialect, sweep, registration)",
    ["source"],
)
EVENT_READ_SECONDS = Histogram(
    "dlr_event_feed_read_seconds",
    "Time to answer GET /events, long-poll waits left out",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
EVENT_OLDEST_AGE = Gauge(
    "dlr_event_feed_oldest_age_seconds",
    "Age of the oldest event the feed keeps, as of the last sweep pass",
    multiprocess_mode="max",
)
EVENTS_PRUNED = Counter("dlr_events_pruned_total", "Events deleted from the feed past DLR_EVENT_RETENTION")
WEBHOOK_ATTEMPTS = Counter(
    "dlr_webhook_attempts_total",
    "Delivery attempts to subscribers, by outcome (2xx, 3xx, 4xx, 5xx, timeout, error)",
    ["outcome"],
)
WEBHOOK_DELIVERIES = Counter(
    "dlr_webhook_deliveries_total",
    "Deliveries that reached a final state, by state (delivered, failed)",
    ["state"],
)
WEBHOOK_ATTEMPT_SECONDS = Histogram(
    "dlr_webhook_attempt_duration_seconds",
    "Time a subscriber took to answer one delivery attempt (or to time out)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30),
)
WEBHOOK_QUEUED = Counter(
    "dlr_webhook_events_queued_total", "Feed events matching a subscription, handed to its deliveries"
)
# Per subscription (the label is its id: as many as an admin creates), as of the dispatcher's last look.
SUBSCRIPTION_BACKLOG = Gauge(
    "dlr_subscription_backlog",
    "Deliveries pending (queued or waiting for a retry) and about how many events are not read yet, by subscription",
    ["subscription"],
    multiprocess_mode="max",
)
SUBSCRIPTION_OLDEST_PENDING = Gauge(
    "dlr_subscription_oldest_pending_age_seconds",
    "Age of the oldest pending delivery or event not read yet, by subscription (0: none)",
    ["subscription"],
    multiprocess_mode="max",
)
SUBSCRIPTIONS_DISABLED = Gauge(
    "dlr_subscriptions_disabled",
    "Subscriptions disabled (410 Gone, failing too long, or by PATCH)",
    multiprocess_mode="max",
)
DELIVERIES_PRUNED = Counter(
    "dlr_webhook_deliveries_pruned_total", "Finished deliveries deleted past DLR_EVENT_RETENTION"
)
TASKS = Counter(
    "dlr_tasks_total", "Background tasks ended, by kind and outcome", ["kind", "outcome"]
)  # kind: export, close, replay; outcome: done, failed, cancelled
TASKS_RUNNING = Gauge(
    "dlr_tasks_running", "Background tasks being run (by this process, or all workers)", multiprocess_mode="livesum"
)
TASK_BATCH_SECONDS = Histogram(
    "dlr_task_batch_duration_seconds",
    "Duration of one background task batch (its transaction), by kind",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
