"""The ceiling: a bare Starlette form endpoint that parses the report and answers, storing nothing.

Served by the same uvicorn (same loop and HTTP parser) as dlr-tracker, so the difference between the
two is what dlr-tracker does: validation, the status engine, the database.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


async def ingest(request: Request) -> Response:
    # The standard library's form parser: Starlette's own request.form() needs python-multipart.
    form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
    return JSONResponse(
        {
            "code": 0,
            "data": {"id": form.get("id"), "status": form.get("status"), "applied": True, "reason": None},
            "message": "",
        }
    )


async def ready(request: Request) -> Response:
    return JSONResponse({"code": 0, "data": {"ready": True}, "message": ""})


app = Starlette(routes=[Route("/dlr/{dialect}", ingest, methods=["POST"]), Route("/readyz", ready)])
