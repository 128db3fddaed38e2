"""Every integer the node protocol and the API take (ids, sequence numbers, cursors, minutes) is checked for
range: a number too large for the database, or for date arithmetic, is a 400 that says the range, never a
500. (A signed ``/node/v1/messages/ack/`` with ``{"ids": [2**70]}`` was a 500: OverflowError.)
"""

from __future__ import annotations

import json
import uuid
from urllib.parse import quote

import pytest

from connections.models import Connection, OutboundMessage
from tests.security.test_hostile_catalogue import _signed, _state, node_conn  # noqa: F401

ACK = "/node/v1/messages/ack/"
MESSAGES = "/node/v1/messages/"
HUGE = [2**63, 2**70, 10**30, -1, 0]


def _post(client, conn, path: str, payload) -> object:  # type: ignore[no-untyped-def]
    body = json.dumps(payload).encode()
    return client.generic(
        "POST", path, data=body, content_type="application/json", **_signed(conn, body, path=path)
    )


def _unchanged(before: dict) -> None:
    after = _state()
    after["counts"]["connections.SeenNonce"] = before["counts"]["connections.SeenNonce"]  # the nonce is spent
    assert after == before


@pytest.mark.parametrize("ids", [[n] for n in HUGE] + [[1.5], ["1"], [True], [None], [[1]], [1] * 1001])
def test_an_ack_with_an_id_out_of_range_or_not_an_integer_is_a_400(client, node_conn, ids):  # noqa: F811
    before = _state()
    response = _post(client, node_conn, ACK, {"ids": ids})
    assert response.status_code == 400, response.content
    assert "each an integer from 1 to 9223372036854775807" in response.json()["detail"]
    _unchanged(before)


def test_an_ack_with_ids_in_range_acknowledges_them(client, node_conn):  # noqa: F811
    message = OutboundMessage.objects.create(
        connection=node_conn, kind="event", trace_id=str(uuid.uuid4()), payload={"type": "status"}
    )
    response = _post(client, node_conn, ACK, {"ids": [message.pk, 2**63 - 1]})
    assert (response.status_code, response.json()) == (200, {"acknowledged": 1})


@pytest.mark.parametrize("after", [str(2**63), str(2**70), "-1", "1e3", "abc", "9" * 5000, "²"])
def test_a_private_peer_polling_after_a_cursor_out_of_range_gets_a_400(client, node_conn, after):  # noqa: F811
    Connection.objects.filter(pk=node_conn.pk).update(private_mode=True, remote_node_url="")
    path = f"{MESSAGES}?after={quote(after)}"
    response = client.generic("GET", path, **_signed(node_conn, b"", method="GET", path=path))
    assert response.status_code == 400, response.content
    assert "'after'" in response.json()["detail"]


def test_a_private_peer_polling_after_the_largest_id_gets_nothing(client, node_conn):  # noqa: F811
    Connection.objects.filter(pk=node_conn.pk).update(private_mode=True, remote_node_url="")
    path = f"{MESSAGES}?after={2**63 - 1}&limit={10**30}"
    response = client.generic("GET", path, **_signed(node_conn, b"", method="GET", path=path))
    assert (response.status_code, response.json()) == (200, {"messages": []})


@pytest.mark.parametrize("seq", [2**31, 2**70, -1, 1.0, "1", True])
def test_an_event_whose_seq_is_out_of_range_is_a_400(client, node_conn, seq):  # noqa: F811
    event = {
        "type": "event",
        "trace_id": str(uuid.uuid4()),
        "kind": "update",
        "seq": seq,
        "remote_item_id": "7",
        "replica": {"version": {"major": 1, "minor": 0, "patch": 0}, "hubIssue": {"id": "7"}},
    }
    before = _state()
    response = _post(client, node_conn, MESSAGES, {"messages": [event]})
    assert response.status_code == 400 and "'seq'" in response.json()["detail"]
    _unchanged(before)


@pytest.mark.parametrize("field", ["minor", "patch"])
def test_a_replica_version_out_of_range_is_a_400(client, node_conn, field):  # noqa: F811
    version = {"major": 1, "minor": 0, "patch": 0, field: 2**70}
    event = {
        "type": "event",
        "trace_id": str(uuid.uuid4()),
        "kind": "update",
        "seq": 1,
        "remote_item_id": "7",
        "replica": {"version": version, "hubIssue": {"id": "7"}},
    }
    response = _post(client, node_conn, MESSAGES, {"messages": [event]})
    assert response.status_code in (202, 400), response.content  # stored as JSON, never a 500


# --- the API ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("minutes", ["99999999999", str(2**70), "²", "-5", "1.5"])
def test_stuck_minutes_out_of_range_is_a_400(staff_api, world, minutes):
    response = staff_api.get(f"/api/v1/connections/{world.a.pk}/twins/", {"stuck_minutes": minutes})
    assert response.status_code == 400, response.content
    assert "stuck_minutes" in response.json()["detail"]


def test_stuck_minutes_in_range_lists_twins(staff_api, world):
    response = staff_api.get(
        f"/api/v1/connections/{world.a.pk}/twins/", {"stuck_minutes": str(10 * 366 * 24 * 60)}
    )
    assert response.status_code == 200


@pytest.mark.parametrize("trigger", [2**63, 2**70, 0, -1])
def test_a_bulk_job_naming_a_trigger_id_out_of_range_is_a_400(staff_api, world, trigger):
    before = _state()
    response = staff_api.post(
        f"/api/v1/connections/{world.a.pk}/bulk/", {"kind": "exalate", "trigger": trigger}, format="json"
    )
    assert response.status_code == 400 and "trigger" in response.json()["fields"]
    assert _state() == before


@pytest.fixture
def staff_api(admin_user):  # type: ignore[no-untyped-def]
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(admin_user)
    return client
