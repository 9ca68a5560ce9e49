"""What a request handler is handed: the application's services, typed (never `app.state`'s untyped bag)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg

from service.access import TokenBuckets
from service.campaign_cache import CampaignStatsCache
from service.config import Settings
from service.feed import ChangeSignal
from service.writer import ReportWriter

if TYPE_CHECKING:  # the runner's kinds import the handlers' modules, which import this one
    from service.tasks.runner import TaskRunner


@dataclass(slots=True)
class Services:
    settings: Settings
    pool: asyncpg.Pool
    writer: ReportWriter
    campaign_stats: CampaignStatsCache
    campaign_histograms: CampaignStatsCache  # the console's delivery-time histograms, as fresh as the stats
    schema_head: str  # the migration revision this code expects
    changes: ChangeSignal  # wakes this process's long-polling feed readers when it commits a change
    tasks: TaskRunner  # this process's runner of background tasks (woken when a request queues one)
    rate_limits: TokenBuckets | None = None  # DLR_RATE_LIMIT's buckets, one per API key name, this process
    draining: bool = False  # a stop signal arrived: not ready, but still finishing requests
    shutting_down: bool = False  # the requests are done: the pool is closing
