"""The CLI's mass operations (`dlr-tracker export`, `close`, `replay`), done through a running service's HTTP
API like `dlr-tracker events`: `DLR_URL` (else http://HOST:PORT) and `DLR_API_KEY`. Each queues its task,
follows it (a progress line on a terminal, quiet otherwise) and exits 0 once it is done, 1 if it failed, was
cancelled or could not be followed."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from service.config import Settings

POLL_SECONDS = 0.5
CHUNK_BYTES = 1 << 16


class ClientError(Exception):
    """The service could not be reached, or refused: the message says which and why."""


class ApiClient:
    def __init__(self, base: str, key: str | None) -> None:
        if not base.startswith(("http://", "https://")):
            raise ClientError(f"the service URL must start with http:// or https://, got {base!r}")
        self.base = base.rstrip("/")
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}

    def open(self, method: str, path: str, body: Any = None) -> Any:
        """The response (a file-like object), or ClientError with the envelope's message."""
        data = None if body is None else json.dumps(body).encode()
        headers = self.headers | ({"Content-Type": "application/json"} if data is not None else {})
        # S310: the scheme was checked on construction (http or https only).
        request = urllib.request.Request(f"{self.base}{path}", data=data, headers=headers, method=method)  # noqa: S310
        try:
            return urllib.request.urlopen(request, timeout=60)  # noqa: S310
        except urllib.error.HTTPError as exc:
            try:
                answer = json.loads(exc.read() or b"{}")
            except ValueError:
                answer = {}
            raise ClientError(f"{exc.code} {answer.get('message') or exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ClientError(f"cannot reach {self.base}{path}: {exc}") from None

    def call(self, method: str, path: str, body: Any = None) -> Any:
        with self.open(method, path, body) as response:
            return json.load(response)["data"]


def client_from(settings: Settings, url: str | None) -> ApiClient:
    base = url or os.environ.get("DLR_URL") or f"http://{settings.host}:{settings.port}"
    return ApiClient(base, os.environ.get("DLR_API_KEY"))


def progress_line(task: dict[str, Any]) -> str:
    done, total = task["progress"]["done"], task["progress"]["total"]
    share = f" ({100 * done // total}%)" if total else ""
    of = f"/{total}" if total is not None else ""
    return f"task {task['id']} {task['kind']}: {task['state']} {done}{of}{share}"


def follow(client: ApiClient, task_id: int, out: IO[str]) -> dict[str, Any]:
    """Poll the task until it ends, redrawing one progress line when `out` is a terminal."""
    tty = out.isatty()
    while True:
        task: dict[str, Any] = client.call("GET", f"/tasks/{task_id}")
        if tty:
            out.write(f"\r\x1b[K{progress_line(task)}")
            out.flush()
        if task["state"] in ("done", "failed", "cancelled"):
            if tty:
                out.write("\n")
            return task
        time.sleep(POLL_SECONDS)


def run(client: ApiClient, path: str, body: dict[str, Any], out: IO[str]) -> dict[str, Any] | None:
    """Queue a task and follow it: the task once done, or None (said on `out`) when it did not succeed."""
    task_id = client.call("POST", path, body)["task_id"]
    try:
        task = follow(client, task_id, out)
    except KeyboardInterrupt:
        print(f"\ndlr-tracker: task {task_id} goes on in the background (GET /tasks/{task_id})", file=out)
        return None
    if task["state"] != "done":
        print(f"dlr-tracker: task {task_id} {task['state']}: {task['error'] or ''}".rstrip(": "), file=out)
        return None
    return task


def export(settings: Settings, args: argparse.Namespace) -> int:
    client = client_from(settings, args.url)
    task = run(client, f"/campaigns/{quote(args.campaign, safe='')}/export", {"format": args.format}, sys.stderr)
    if task is None:
        return 1
    target = Path(args.output) if args.output else None
    with client.open("GET", task["result"]["download"]) as response:
        sink = target.open("wb") if target else sys.stdout.buffer
        try:
            # A chunk at a time: a million-row export never sits in this process's memory.
            while chunk := response.read(CHUNK_BYTES):
                sink.write(chunk)
        finally:
            if target:
                sink.close()
            else:
                sink.flush()
    if target:
        print(f"exported {task['result']['rows']} messages to {target}", file=sys.stderr)
    return 0


def close(settings: Settings, args: argparse.Namespace) -> int:
    client = client_from(settings, args.url)
    task = run(client, f"/campaigns/{quote(args.campaign, safe='')}/close", {"status": args.status}, sys.stderr)
    if task is None:
        return 1
    result = task["result"]
    print(f"closed campaign {args.campaign}: resolved {result['resolved']} messages")
    for status, count in sorted(result["by_status"].items()):
        print(f"  {status}\t{count}")
    return 0


def replay(settings: Settings, args: argparse.Namespace) -> int:
    client = client_from(settings, args.url)
    body = {name: value for name in ("dialect", "since", "until") if (value := getattr(args, name)) is not None}
    task = run(client, "/quarantine/replay", body, sys.stderr)
    if task is None:
        return 1
    result = task["result"]
    print(f"replayed {result['replayed']} payloads; {result['failed']} still fail and stay in the quarantine")
    return 0


def add_commands(sub: Any) -> None:
    """The three commands' arguments, on the `dlr-tracker` parser's subcommands."""
    url = {"help": "the service's base URL (default: DLR_URL, else http://HOST:PORT)"}
    p = sub.add_parser("export", help="export a campaign's messages through a running service")
    p.add_argument("campaign")
    p.add_argument("--format", choices=("csv", "ndjson"), default="csv")
    p.add_argument("--output", help="write to this file (default: standard output)")
    p.add_argument("--url", **url)
    p = sub.add_parser("close", help="resolve every open message of a campaign now (EXPIRED or DELETED)")
    p.add_argument("campaign")
    p.add_argument("--status", choices=("EXPIRED", "DELETED"), required=True)
    p.add_argument("--url", **url)
    p = sub.add_parser("replay", help="replay every matching quarantined payload")
    p.add_argument("--dialect", help="only this dialect's payloads")
    p.add_argument("--since", help="received at or after this time (ISO-8601 or unix seconds)")
    p.add_argument("--until", help="received at or before this time")
    p.add_argument("--url", **url)


COMMANDS = {"export": export, "close": close, "replay": replay}


def main(settings: Settings, args: argparse.Namespace) -> int:
    try:
        return COMMANDS[args.command](settings, args)
    except ClientError as exc:
        print(f"\ndlr-tracker: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 1  # the reader of the export went away (| head): it did not get all of it
