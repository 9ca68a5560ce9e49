"""`/campaigns/{campaign}`: how a campaign is doing."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from service.auth import require_api_key
from service.errors import NotFound, database_errors
from service.http.envelope import ok
from service.http.messages import path_id
from service.http.requests import read_query, state
from service.http.scopes import scope_of


async def get_campaign(request: Request) -> Response:
    app = state(request)
    require_api_key(request, app, scope_of(request))
    read_query(request)
    campaign = path_id(request, "campaign", "campaign")
    async with database_errors("read"):
        stats = await app.campaign_stats.get(campaign)
    if stats is None:
        raise NotFound(f"campaign {campaign[:80]!r} not found", {"campaign": campaign[:255]})
    return ok({"campaign": campaign, **stats})
