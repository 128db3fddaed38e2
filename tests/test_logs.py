"""Logs that follow one change: every pipeline record carries the event's trace id, the connection and the
item key; ``LOG_FORMAT=json`` writes one JSON object per line."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from exalate_node.logs import ContextFilter, JsonFormatter
from replicas import pipeline
from replicas.models import SyncEvent
from tests.replicas.conftest import local_pair  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def json_lines():  # type: ignore[no-untyped-def]
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    level, root.level = root.level, logging.INFO
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    root.removeHandler(handler)
    root.level = level


@pytest.mark.django_db(transaction=True)
def test_one_change_is_followed_by_its_trace_id_on_both_sides(local_pair, json_lines) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    a, b = local_pair
    issue = a.create("Follow me")
    pipeline.exalate(connection=a.connection, key=issue.key)
    a.edit(issue.key, summary="Followed")
    out = SyncEvent.objects.filter(direction="out", twin__connection=a.connection).order_by("id").last()
    records = [r for r in json_lines() if r.get("trace_id") == str(out.trace_id)]
    messages = [r["message"] for r in records]
    # The sending side and the receiving side of one change, found by the one id.
    assert any(m.startswith(f"Sent {issue.key} to ") for m in messages), messages
    assert any(m.startswith("Applied message ") for m in messages), messages
    for record in records:
        assert record["logger"] == "replicas.pipeline" and record["level"] == "INFO"
        assert record["connection"] in (str(a.connection.pk), str(b.connection.pk))
        assert record["item"] and record["time"].endswith("+00:00")
    # Outside a change's work, records carry no trace id (nothing stale is left bound).
    logging.getLogger("tests").warning("after the sync")
    assert "trace_id" not in json_lines()[-1]


def _manage(*args: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "LOG_FORMAT")}
    clean.update({"VAR_DIR": str(tmp_path), "DEBUG": "true", **env})
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_log_format_json_writes_one_object_per_line_and_a_wrong_value_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    code = (
        "import logging\n"
        "from exalate_node import logs\n"
        "with logs.bind(trace_id='t-1', connection=7, item='SUP-9'):\n"
        "    logging.getLogger('replicas.pipeline').warning('hello %s', 'there')\n"
        "try:\n"
        "    1 / 0\n"
        "except ZeroDivisionError:\n"
        "    logging.getLogger('x').exception('failed')\n"
    )
    result = _manage("shell", "-c", code, env={"LOG_FORMAT": "json"}, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    hello = next(r for r in lines if r["message"] == "hello there")
    assert (hello["trace_id"], hello["connection"], hello["item"]) == ("t-1", "7", "SUP-9")
    failed = next(r for r in lines if r["message"] == "failed")
    assert "ZeroDivisionError" in failed["exc"] and "trace_id" not in failed

    plain = _manage("shell", "-c", code, env={"LOG_FORMAT": "plain"}, tmp_path=tmp_path)
    assert "hello there [trace_id=t-1 connection=7 item=SUP-9]" in plain.stderr

    wrong = _manage("check", env={"LOG_FORMAT": "xml"}, tmp_path=tmp_path)
    assert wrong.returncode != 0 and "LOG_FORMAT is 'xml'; write plain (the default) or json." in wrong.stderr


def test_json_logs_redact_secrets_in_messages_and_tracebacks(json_lines) -> None:  # type: ignore[no-untyped-def]
    from exalate_node.redaction import registry

    secret = "sk-" + os.urandom(12).hex()
    registry.add(secret)
    log = logging.getLogger("tests.secrets")
    log.warning("the key is %s", secret)
    try:
        raise ValueError(f"refused key {secret}")
    except ValueError:
        log.exception("call failed")
    lines = json_lines()
    assert lines and secret not in json.dumps(lines)
    assert "ValueError: refused key" in lines[-1]["exc"]
