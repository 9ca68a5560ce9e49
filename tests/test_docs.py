"""The README stays true: its status table is generated from the engine, its settings from the code.

Print the current table with `python -m tests.test_docs`.
"""

from __future__ import annotations

import re

from service.engine import SEGMENT_DECISIONS
from service.statuses import SEGMENT_STATUSES, Status
from tests.conftest import REPO

ORDER = [s for s in Status if s in SEGMENT_STATUSES]


def decision_table() -> str:
    """Markdown: rows are a segment's current status, columns the reported one; `apply` or the reason."""
    head = "| current \\ reported | " + " | ".join(s.value for s in ORDER) + " |"
    rule = "|---" * (len(ORDER) + 1) + "|"
    rows = [
        f"| **{cur.value}** | " + " | ".join((SEGMENT_DECISIONS[(cur, new)] or "apply") for new in ORDER) + " |"
        for cur in ORDER
    ]
    return "\n".join([head, rule, *rows])


def test_readme_status_table_matches_the_engine() -> None:
    """The decision table in the README is exactly what the engine decides."""
    assert decision_table() in (REPO / "README.md").read_text()


def test_readme_configuration_table_matches_the_settings_read() -> None:
    """Every variable Settings reads is documented in the README's configuration table, and no other."""
    code = (REPO / "service" / "config.py").read_text()
    read = set(re.findall(r'"((?:DLR_|DATABASE_|HOST|PORT|WEB_|LOG_)[A-Z_]*)"', code))
    # The per-dialect prefixes, documented as DLR_WEBHOOK_TOKEN_<DIALECT> and DLR_WEBHOOK_SECRET_<DIALECT>.
    read -= {"DLR_WEBHOOK_TOKEN_", "DLR_WEBHOOK_SECRET_"}
    readme = (REPO / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([A-Z_]+(?:<DIALECT>)?)`", table, flags=re.M))
    assert read == documented - {"DLR_WEBHOOK_TOKEN_<DIALECT>", "DLR_WEBHOOK_SECRET_<DIALECT>"}


if __name__ == "__main__":
    print(decision_table())


def test_readme_metrics_table_lists_every_metric_the_service_exports(client) -> None:  # type: ignore[no-untyped-def]
    """The README's metrics table names exactly the dlr_ metric families /metrics exports."""
    exported = set(re.findall(r"^# TYPE (dlr_\w+) ", client.get("/metrics").text, flags=re.M))
    # prometheus_client's TYPE line names a counter without its _total suffix.
    readme = (REPO / "README.md").read_text()
    table = readme.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    documented = {name.removesuffix("_total") for name in re.findall(r"^\| `(dlr_\w+)`", table, flags=re.M)}
    assert {name.removesuffix("_total") for name in exported} == documented


def test_the_readme_receiver_verifies_signatures() -> None:
    """The README's ten-line receiver runs as printed: a signed delivery is answered 204, a forged one 400."""
    from datetime import UTC, datetime

    from starlette.testclient import TestClient

    from service.subscriptions import signing

    readme = (REPO / "README.md").read_text()
    code = readme.split("### Receive status webhooks", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    secret = signing.new_secret()
    namespace: dict[str, object] = {}
    exec(code.replace('"whsec_..."', repr(secret)), namespace)  # noqa: S102 - the README's own example
    body = b'{"type":"message.status_changed","timestamp":"2026-01-01T00:00:00Z","data":{"id":"m1","status":"DELIVRD"}}'
    headers = signing.headers("1-1", datetime.now(UTC), body, [secret])
    with TestClient(namespace["app"]) as receiver:  # type: ignore[arg-type]
        assert receiver.post("/dlr-status", content=body, headers=headers).status_code == 204
        forged = {
            **headers,
            "webhook-signature": signing.headers("1-1", datetime.now(UTC), body, [signing.new_secret()])[
                "webhook-signature"
            ],
        }
        assert receiver.post("/dlr-status", content=body, headers=forged).status_code == 400
