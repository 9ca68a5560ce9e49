"""The write path: reports in, one transaction, each caller's outcome out.

Today every call is one transaction; the callers already hand over lists, so group commit can take
what is waiting from many callers and apply it as one batch without changing them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg

from service import metrics, store
from service.errors import database_errors
from service.store import AppliedReport, IncomingReport


class ReportWriter:
    def __init__(self, pool: asyncpg.Pool, *, lifetime: int, timeout: float) -> None:
        self._pool = pool
        self._lifetime = lifetime
        self._timeout = timeout

    async def apply(self, reports: Sequence[IncomingReport]) -> list[AppliedReport]:
        if not reports:
            return []
        async with database_errors("ingest"), self._pool.acquire(timeout=self._timeout) as conn:
            answers = await store.apply_reports(conn, reports, lifetime=self._lifetime)
        record(reports, answers)
        return answers


def record(reports: Sequence[IncomingReport], answers: Sequence[AppliedReport]) -> None:
    """Count what was committed (never before the commit: a rolled-back report counted nothing)."""
    for report, answer in zip(reports, answers, strict=True):
        outcome = "applied" if answer.applied else (answer.reason.value if answer.reason else "unmapped")
        metrics.REPORTS.labels(report.source, outcome).inc()
        if not answer.applied and answer.reason is not None:
            metrics.REJECTED.labels(answer.reason.value).inc()
        if answer.status is not answer.message_from:
            metrics.TRANSITIONS.labels(answer.message_from.value, answer.status.value).inc()
        if answer.delivery_seconds is not None:
            metrics.DELIVERY_SECONDS.observe(answer.delivery_seconds)
        metrics.INGEST_SECONDS.observe(max(0.0, _seconds_since(report)))


def _seconds_since(report: IncomingReport) -> float:
    return (datetime.now(UTC) - report.received_at).total_seconds()
