"""Fuzzing the machine doors: the node protocol and the webhooks, with requests that pass authentication.

Bodies are drawn with hypothesis from the protocol's own shapes: message batches whose replicas come from
the replica JSON Schema (``replicas/schema/replica-1.json``, through ``tests/schema_strategies.py``) and
the message fields ``connections/node_views.py`` reads, acks, status changes, key-rotation bodies and poll
cursors, each correctly signed; webhook bodies shaped like each tracker's deliveries (and arbitrary JSON),
each with the right secret or signature. Some values are valid, some are swapped for hostile JSON (wrong
types, lone surrogates, huge numbers, markup). Any answer of 500 or more fails the suite; every refusal is
a JSON ``{"detail", "code"}``.

The example budget is fixed and the draws are derandomized, so CI runs the same cases every time and
stays fast (``FUZZ_EXAMPLES`` raises the budget for a longer local run).
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connections.models import Connection
from instances.connectors import github, jira
from replicas.schema import _DIR as SCHEMA_DIR
from tests.schema_strategies import HOSTILE_NUMBERS, HOSTILE_TEXT, from_schema, hostile_json, mutated
from tests.security.test_hostile_catalogue import _signed, node_conn  # noqa: F401
from tests.webhook_deliveries import GOOD_BODIES, WEBHOOK_TRACKERS, deliver, webhook_instance

pytestmark = pytest.mark.django_db

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)

REPLICA_SCHEMA = json.loads((SCHEMA_DIR / "replica-1.json").read_text())
replicas = from_schema(REPLICA_SCHEMA)

texts = st.one_of(st.text(max_size=12), st.sampled_from(HOSTILE_TEXT))
integers = st.one_of(st.integers(min_value=-5, max_value=50), st.sampled_from(HOSTILE_NUMBERS))
trace_ids = st.one_of(st.uuids().map(str), texts)

events = st.fixed_dictionaries(
    {
        "type": st.just("event"),
        "trace_id": trace_ids,
        "kind": st.one_of(st.sampled_from(["create", "update", "unexalate"]), texts),
        "seq": integers,
        "remote_item_id": texts,
        "replica": st.one_of(replicas, mutated(replicas), st.none()),
    }
)
links = st.fixed_dictionaries(
    {"kind": st.sampled_from(["comment", "attachment"]), "local_id": texts, "remote_id": texts}
)
acks = st.fixed_dictionaries(
    {"type": st.just("ack"), "trace_id": trace_ids, "remote_item_id": texts, "local_item_id": texts},
    optional={
        "remote_key": texts,
        "remote_url": st.one_of(texts, st.just("https://far.example/browse/X-1")),
        "links": st.one_of(st.lists(links, max_size=3), hostile_json(4)),
    },
)
statuses = st.fixed_dictionaries(
    {"type": st.just("status"), "status": st.one_of(st.sampled_from(["active", "deactivated"]), texts)}
)
batches = st.one_of(
    st.fixed_dictionaries({"messages": st.lists(st.one_of(events, acks, statuses), max_size=3)}),
    mutated(st.fixed_dictionaries({"messages": st.lists(st.one_of(events, acks, statuses), max_size=2)})),
    hostile_json(),
)
ack_bodies = st.one_of(st.fixed_dictionaries({"ids": st.lists(integers, max_size=4)}), hostile_json())
status_bodies = st.one_of(
    st.fixed_dictionaries({"status": st.one_of(st.sampled_from(["active", "deactivated"]), texts)}),
    hostile_json(),
)  # "deleted" deletes the connection: tests/connections/test_node_protocol.py covers it
rotation_bodies = st.one_of(
    st.fixed_dictionaries(
        {"rotation": trace_ids, "pub": st.one_of(texts, st.binary(max_size=40).map(bytes.hex))}
    ),
    hostile_json(),
)


def _assert_answered(response: Any) -> None:
    assert response.status_code < 500, (response.status_code, response.content[:500])
    if response.status_code >= 400:
        assert {"detail", "code"} <= set(response.json()), response.content[:300]


def _post_signed(client: Any, conn: Connection, path: str, payload: Any) -> Any:
    body = json.dumps(payload).encode()
    return client.generic(
        "POST", path, data=body, content_type="application/json", **_signed(conn, body, path=path)
    )


@pytest.fixture
def peer(client, node_conn):  # type: ignore[no-untyped-def]  # noqa: F811
    """The test client and an active connection whose peer the test plays (private mode: it may poll)."""
    Connection.objects.filter(pk=node_conn.pk).update(private_mode=True, remote_node_url="")
    node_conn.refresh_from_db()
    return client, node_conn


def test_fuzz_message_batches_never_get_a_server_error(peer):
    client, conn = peer

    @FUZZ
    @given(batches)
    def run(payload: Any) -> None:
        _assert_answered(_post_signed(client, conn, "/node/v1/messages/", payload))

    run()


def test_fuzz_acks_status_and_key_rotation_never_get_a_server_error(peer):
    client, conn = peer

    @FUZZ
    @given(
        st.one_of(
            st.tuples(st.just("/node/v1/messages/ack/"), ack_bodies),
            st.tuples(st.just("/node/v1/status/"), status_bodies),
            st.tuples(st.just("/node/v1/rotate-key/"), rotation_bodies),
            st.tuples(st.just("/node/v1/rotate-key/confirm/"), hostile_json()),
        )
    )
    def run(case: tuple[str, Any]) -> None:
        path, payload = case
        _assert_answered(_post_signed(client, conn, path, payload))
        Connection.objects.filter(pk=conn.pk).update(rotation_started_at=None)

    run()


def test_fuzz_polls_and_attachment_fetches_never_get_a_server_error(peer):
    client, conn = peer
    params = st.one_of(texts, integers.map(str))

    @FUZZ
    @given(
        st.one_of(
            st.tuples(params, params).map(
                lambda p: f"/node/v1/messages/?after={quote(p[0])}&limit={quote(p[1])}"
            ),
            st.tuples(params, params).map(
                lambda p: f"/node/v1/attachments/{quote(p[0], safe='') or 'x'}/{quote(p[1], safe='') or 'x'}/"
            ),
        )
    )
    def run(path: str) -> None:
        response = client.generic("GET", path, **_signed(conn, b"", method="GET", path=path))
        _assert_answered(response)

    run()


def test_fuzz_handshakes_never_get_a_server_error(client, world):
    handshakes = st.one_of(
        st.fixed_dictionaries(
            {
                "invitation_id": trace_ids,
                "pub": texts,
                "proof": texts,
                "node": hostile_json(4),
                "instance": hostile_json(4),
            }
        ),
        hostile_json(),
    )

    @FUZZ
    @given(handshakes)
    def run(payload: Any) -> None:
        body = json.dumps(payload).encode()
        _assert_answered(
            client.generic("POST", "/node/v1/handshake/", data=body, content_type="application/json")
        )

    run()


def _tracker_shaped(tracker: str) -> st.SearchStrategy[Any]:
    """Deliveries with the tracker's own keys, nested as it nests them, each value valid or hostile."""
    good = GOOD_BODIES[tracker]

    def like(value: Any) -> st.SearchStrategy[Any]:
        if isinstance(value, dict):
            return st.fixed_dictionaries({}, optional={k: like(v) for k, v in value.items()})
        return st.one_of(st.just(value), hostile_json(4))

    shaped = like(good)
    return st.one_of(shaped, mutated(shaped), st.lists(shaped, max_size=3), hostile_json())


@pytest.mark.parametrize("tracker", list(WEBHOOK_TRACKERS))
def test_fuzz_webhooks_never_get_a_server_error(client, tracker):
    instance = webhook_instance(tracker)

    @FUZZ
    @given(_tracker_shaped(tracker))
    def run(payload: Any) -> None:
        github.reset_memory()
        jira.reset_memory()
        response = deliver(client, instance, json.dumps(payload).encode())
        _assert_answered(response)
        if response.status_code == 202:
            assert 0 <= response.json()["accepted"] <= 3

    run()


def test_the_strategies_draw_valid_replicas():
    """The schema strategy must produce replicas the node accepts (else the fuzz never gets past the
    schema check and tests little)."""
    from hypothesis import find

    from replicas.schema import validate_replica

    for _ in range(3):
        replica = find(replicas, lambda r: len(r["hubIssue"]) > 3, settings=settings(database=None))
        assert validate_replica(replica) is replica
    assert uuid.UUID(find(trace_ids, lambda t: len(t) == 36))
