"""The ports a lower layer offers a higher one (docs/architecture.md, "Layers"): registered when the apps are
ready, and loud when missing, so a change is never dropped silently."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from connections.transport import HttpTransport
from instances import outbox as outbox_port
from replicas import outbox, transport

ROOT = Path(__file__).resolve().parents[2]


def test_the_pipeline_is_the_registered_outbox_and_http_the_node_to_node_transport() -> None:
    assert outbox_port._registered() is outbox
    assert isinstance(transport.transport_for(SimpleNamespace(is_local=False)), HttpTransport)
    assert isinstance(transport.transport_for(SimpleNamespace(is_local=True)), transport.LocalTransport)


def test_a_change_without_an_outbox_is_refused_not_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox_port, "_outbox", None)
    with pytest.raises(RuntimeError, match="'replicas' to INSTALLED_APPS"):
        outbox_port.record_item_change(instance_id=1, item_id="1", item_key="K-1", actor="a@example.com")


def test_a_node_to_node_send_without_a_transport_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(transport, "_remote", None)
    with pytest.raises(RuntimeError, match="'connections' to INSTALLED_APPS"):
        transport.transport_for(SimpleNamespace(is_local=False))


def test_registering_the_ports_at_startup_loads_neither_the_pipeline_nor_the_http_transport() -> None:
    # A process that never syncs (a management command, the web process before its first sync) must not
    # pay for them: they were imported on first use before the ports existed (16 MB and 200 modules).
    code = (
        "import sys, django; django.setup(); "
        "print(sorted(m for m in ('replicas.pipeline', 'connections.transport') if m in sys.modules))"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "exalate_node.settings_test"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]", out.stderr
