"""The helpers shared by the Connectors II connectors: the streamed multipart body, the transport seam,
the polling window and the replay guard."""

from __future__ import annotations

import email.parser
import io
import os

import requests

from instances.connectors import _common
from instances.connectors._multipart import MultipartFile


def test_multipart_streams_parses_and_rewinds():  # type: ignore[no-untyped-def]
    data = os.urandom(70_000)
    form = MultipartFile(
        "file",
        'we"ird.bin',
        io.BytesIO(data),
        "application/x-test",
        before=[("meta", "application/json", b"{}")],
    )
    whole = form.read()
    assert len(whole) == len(form)
    form.seek(0)
    chunks = b"".join(iter(lambda: form.read(4096), b""))
    assert chunks == whole
    message = email.parser.BytesParser().parsebytes(
        f"Content-Type: {form.content_type}\r\n\r\n".encode() + whole
    )
    meta, part = message.get_payload()
    assert meta.get_payload() == "{}" and part.get_filename() == 'we"ird.bin'
    assert part.get_payload(decode=True) == data


def test_use_transport_is_scoped():  # type: ignore[no-untyped-def]
    session = requests.Session()
    with _common.use_transport(lambda tracker: session, sleep=lambda s: None):
        assert _common._transport.session_factory("x") is session
    assert _common._transport.session_factory is None


def test_seen_window_and_replay_guard():  # type: ignore[no-untyped-def]
    seen = _common.SeenWindow()
    assert seen.fresh("a", "1", "2026-03-01T09:00:00Z") and not seen.fresh("a", "1", "2026-03-01T09:00:00Z")
    assert seen.fresh("a", "1", "2026-03-01T09:00:01Z") and seen.fresh("b", "1", "2026-03-01T09:00:00Z")
    seen.forget_before("a", _common.parse_ts("2026-03-01T09:00:01Z"))
    assert seen.fresh("a", "1", "2026-03-01T09:00:00Z")
    guard = _common.ReplayGuard(ttl=10)
    assert (
        guard.first_time("d1", now=0) and not guard.first_time("d1", now=5) and guard.first_time("d1", now=20)
    )
    assert guard.first_time("", now=0) and guard.first_time("", now=0)  # no id: cannot tell, always new
    assert _common.parse_ts("2026-03-01 09:00:00").isoformat() == "2026-03-01T09:00:00+00:00"
    assert _common.parse_ts("2026-03-01T09:00:00.000+0000").isoformat() == "2026-03-01T09:00:00+00:00"
