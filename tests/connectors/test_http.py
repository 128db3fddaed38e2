"""The HTTP seam (``instances.connectors.http.HttpClient``) against a loopback HTTP server.

Facts of HTTP the client relies on (RFC 9110, RFC 6585, the IETF RateLimit draft):

* ``429 Too Many Requests`` and 5xx are worth retrying; ``Retry-After`` is delta seconds or an HTTP date;
* GitHub/GitLab send ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (an epoch time), the draft sends
  ``RateLimit-Reset`` (seconds); a 403 with ``X-RateLimit-Remaining: 0`` is a rate limit, not a refusal;
* other 4xx are refusals: retrying cannot help.

Nothing really sleeps: the client's sleep and clocks are a fake that advances time.
"""

from __future__ import annotations

import email.utils
import hashlib
import io
import logging
import os

import pytest

from instances.connectors.base import ConnectorError
from instances.connectors.http import HttpClient, TokenBucket, parse_retry_after, process_requests, redact
from tests.connectors.conftest import Loopback, Reply
from tests.connectors.fakes.github import FakeGitHub
from tests.connectors.fakes.support import FakeClock, wired
from tests.connectors.test_github import _desk_and_github


class FakeTime:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 3))
        self.now += seconds


def client(server: Loopback, fake: FakeTime, **kwargs) -> HttpClient:  # type: ignore[no-untyped-def]
    kwargs.setdefault("bucket_key", f"test-{os.urandom(4).hex()}")
    kwargs.setdefault("rate_per_s", 1000)
    return HttpClient(
        server.url,
        service="Redmine",
        sleep=fake.sleep,
        clock=fake.clock,
        wall_clock=fake.clock,
        jitter=lambda low, high: high,  # the top of the jitter range: deterministic
        **kwargs,
    )


def test_retries_429_after_the_retry_after_seconds(loopback: Loopback) -> None:
    fake = FakeTime()
    loopback.replies += [
        Reply(429, {"errors": ["slow down"]}, {"Retry-After": "7"}),
        Reply(200, {"ok": True}),
    ]
    http = client(loopback, fake)
    before = process_requests["GET"]
    assert http.get_json("issues.json") == {"ok": True}
    assert fake.sleeps == [7.0]
    assert http.requests_made == 2 and http.requests_by_method["GET"] == 2
    assert process_requests["GET"] == before + 2 and http.writes_made == 0


def test_retry_after_as_an_http_date(loopback: Loopback) -> None:
    fake = FakeTime()
    when = email.utils.formatdate(fake.now + 12, usegmt=True)
    loopback.replies += [Reply(503, "", {"Retry-After": when}), Reply(200, {"ok": True})]
    client(loopback, fake).get_json("x.json")
    assert fake.sleeps == [12.0]
    assert parse_retry_after("garbage", now=0) is None


def test_5xx_then_success_backs_off_exponentially(loopback: Loopback) -> None:
    fake = FakeTime()
    loopback.replies += [Reply(502), Reply(500), Reply(200, {"n": 1})]
    http = client(loopback, fake)
    assert http.get_json("x.json") == {"n": 1}
    assert fake.sleeps == [0.5, 1.0]  # full jitter's upper bounds: base 0.5 s, doubling


def test_gives_up_after_max_attempts_with_a_retryable_error(loopback: Loopback) -> None:
    fake = FakeTime()
    loopback.replies += [Reply(503)] * 4
    http = client(loopback, fake)
    with pytest.raises(ConnectorError) as exc:
        http.request("GET", "issues.json", action="list the issues")
    assert exc.value.retryable and exc.value.status == 503
    assert "list the issues" in exc.value.message and "4 attempt(s)" in exc.value.message
    assert http.requests_made == 4 and fake.sleeps == [0.5, 1.0, 2.0]


def test_never_sleeps_past_the_deadline(loopback: Loopback) -> None:
    fake = FakeTime()
    loopback.replies += [Reply(429, "", {"Retry-After": "600"})]
    http = client(loopback, fake, deadline=60)
    with pytest.raises(ConnectorError) as exc:
        http.request("GET", "x.json")
    assert exc.value.retryable and "600 s" in exc.value.message
    assert fake.sleeps == [] and http.requests_made == 1


def test_4xx_is_not_retried_and_says_what_to_do(loopback: Loopback) -> None:
    fake = FakeTime()
    loopback.replies += [Reply(403, {"errors": ["You are not authorized"]})]
    http = client(loopback, fake, hints={403: "the API key has no permission for project X. Check the role."})
    with pytest.raises(ConnectorError) as exc:
        http.request("PUT", "issues/1.json", json={}, action="update issue #1")
    assert not exc.value.retryable and exc.value.status == 403
    assert exc.value.message.startswith("Redmine refused the request to update issue #1 (403 Forbidden): ")
    assert "Check the role." in exc.value.message and "You are not authorized" in exc.value.message
    assert http.requests_made == 1 and fake.sleeps == []


def test_ok_statuses_are_returned_not_raised(loopback: Loopback) -> None:
    loopback.replies += [Reply(404, {"errors": []})]
    assert client(loopback, FakeTime()).request("GET", "x", ok_statuses=(404,)).status_code == 404


def test_connection_errors_are_retried_then_retryable() -> None:
    fake = FakeTime()
    with __import__("socket").socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    http = HttpClient(
        f"http://127.0.0.1:{port}", sleep=fake.sleep, clock=fake.clock, max_attempts=3, jitter=lambda a, b: b
    )
    with pytest.raises(ConnectorError) as exc:
        http.request("GET", "issues.json", params={"key": "s3cret-key"})
    assert exc.value.retryable and "could not connect" in exc.value.message
    assert "s3cret" not in exc.value.message
    assert http.requests_made == 3 and fake.sleeps == [0.5, 1.0]


def test_credentials_never_reach_the_logs(loopback: Loopback, caplog: pytest.LogCaptureFixture) -> None:
    loopback.replies += [Reply(500), Reply(200, {"ok": 1}), Reply(401, {"errors": ["token=abc-secret"]})]
    http = client(
        loopback,
        FakeTime(),
        headers={"Authorization": "Bearer top-secret-1", "X-Redmine-API-Key": "top-secret-2"},
    )
    with caplog.at_level(logging.DEBUG, logger="exalate.http"):
        http.get_json("issues.json", params={"key": "top-secret-3", "api_key": "top-secret-4", "limit": 5})
        with pytest.raises(ConnectorError) as exc:
            http.get_json("x.json", params={"token": "top-secret-5"})
    assert "GET /issues.json?key=***&api_key=***&limit=5 -> 500" in caplog.text
    assert "-> 200" in caplog.text and "-> 401" in caplog.text
    assert "top-secret" not in caplog.text and "secret" not in exc.value.message
    assert loopback.seen[0].headers["X-Redmine-API-Key"] == "top-secret-2"  # but they were sent
    assert redact("https://u:pw@h/x?private_token=a&q=1") == "https://***@h/x?private_token=***&q=1"


def test_budget_throttles_to_the_rate_shared_by_instance(loopback: Loopback) -> None:
    fake = FakeTime()
    loopback.replies += [Reply(200, {})] * 6
    a = client(loopback, fake, bucket_key="inst-1", rate_per_s=2)
    b = client(loopback, fake, bucket_key="inst-1", rate_per_s=2)
    for http in (a, b, a, b, a, b):
        http.get_json("x.json")
    # A burst of 2, then one request every 0.5 s for both clients of the instance together.
    assert fake.sleeps == [0.5, 0.5, 0.5, 0.5]
    assert a.bucket is b.bucket


def test_token_bucket_refills_with_time() -> None:
    fake = FakeTime()
    bucket = TokenBucket(1, clock=fake.clock)
    assert bucket.reserve() == 0
    assert bucket.reserve() == pytest.approx(1.0)
    fake.now += 5
    assert bucket.reserve() == 0


def test_spent_rate_limit_pauses_the_next_request(loopback: Loopback) -> None:
    fake = FakeTime()
    headers = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(fake.now + 9))}
    loopback.replies += [Reply(200, {}, headers), Reply(200, {})]
    http = client(loopback, fake)
    http.get_json("a.json")
    assert fake.sleeps == []
    http.get_json("b.json")
    assert fake.sleeps == [9.0]


def test_403_with_spent_rate_limit_is_a_rate_limit(loopback: Loopback) -> None:
    fake = FakeTime()
    loopback.replies += [Reply(403, {}, {"RateLimit-Remaining": "0", "RateLimit-Reset": "3"}), Reply(200, {})]
    client(loopback, fake).get_json("a.json")
    assert 3.0 in fake.sleeps


def test_streaming_download(loopback: Loopback) -> None:
    body = os.urandom(1_000_000)
    loopback.replies += [Reply(200, body, {"Content-Type": "application/octet-stream"})]
    chunks = list(client(loopback, FakeTime()).download("attachments/download/1", chunk_size=64 * 1024))
    assert len(chunks) > 10 and max(len(c) for c in chunks) <= 64 * 1024
    assert b"".join(chunks) == body


class ReadRecorder(io.BytesIO):
    """A file that remembers how much each read asked for."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.reads: list[int | None] = []

    def read(self, size: int | None = -1) -> bytes:
        self.reads.append(size)
        return super().read(size)


def test_streaming_upload_rewinds_for_a_retry(loopback: Loopback) -> None:
    data = os.urandom(300_000)
    content = ReadRecorder(data)
    loopback.replies += [Reply(503), Reply(201, {"upload": {"token": "1.x"}})]
    response = client(loopback, FakeTime()).upload("uploads.json", content, params={"filename": "a.bin"})
    assert response.status_code == 201
    assert [hashlib.sha256(s.body).hexdigest() for s in loopback.seen] == [
        hashlib.sha256(data).hexdigest()
    ] * 2
    assert loopback.seen[1].headers["Content-Type"] == "application/octet-stream"
    assert all(size is not None and 0 < size <= 64 * 1024 for size in content.reads)  # never read whole


def test_credentials_only_go_to_the_base_url(loopback: Loopback) -> None:
    with pytest.raises(ConnectorError) as exc:
        client(loopback, FakeTime()).request("GET", "http://elsewhere.example/steal")
    assert "another host" in exc.value.message and loopback.seen == []


# --- requests that must not be repeated blindly ---------------------------------------------------------
# A POST that creates something, or a PUT that adds a comment, may have been carried out even though its
# answer never arrived. Repeating it would make a duplicate; the pipeline checks what happened instead.


def test_a_create_whose_answer_is_lost_is_not_repeated(loopback: Loopback) -> None:
    loopback.replies += [Reply(drop=True), Reply(201, {"issue": {"id": 2}})]
    http = client(loopback, FakeTime())
    with pytest.raises(ConnectorError) as exc:
        http.send_json("POST", "issues.json", {"issue": {}}, action="create an issue")
    assert exc.value.retryable
    assert "may have done it" in exc.value.message and "check before trying again" in exc.value.message
    assert [s.method for s in loopback.seen] == ["POST"]


def test_a_create_answered_with_a_server_error_is_not_repeated(loopback: Loopback) -> None:
    loopback.replies += [Reply(500), Reply(201, {"issue": {"id": 2}})]
    http = client(loopback, FakeTime())
    with pytest.raises(ConnectorError) as exc:
        http.send_json("POST", "issues.json", {"issue": {}}, action="create an issue")
    assert exc.value.retryable and exc.value.status == 500
    assert "may have done it anyway" in exc.value.message and len(loopback.seen) == 1


def test_a_create_refused_with_429_or_503_is_repeated(loopback: Loopback) -> None:
    # Both say the server did not act on it.
    fake = FakeTime()
    loopback.replies += [Reply(429, "", {"Retry-After": "3"}), Reply(503), Reply(201, {"issue": {"id": 2}})]
    http = client(loopback, fake)
    assert http.send_json("POST", "issues.json", {"issue": {}}) == {"issue": {"id": 2}}
    assert len(loopback.seen) == 3 and fake.sleeps == [3.0, 1.0]


def test_a_create_that_never_reached_the_tracker_is_repeated() -> None:
    fake = FakeTime()
    with __import__("socket").socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there: the connection is refused
    http = HttpClient(
        f"http://127.0.0.1:{port}", sleep=fake.sleep, clock=fake.clock, max_attempts=3, jitter=lambda a, b: b
    )
    with pytest.raises(ConnectorError) as exc:
        http.send_json("POST", "issues.json", {"issue": {}})
    assert exc.value.retryable and "could not connect" in exc.value.message
    assert http.requests_made == 3


@pytest.mark.parametrize(
    ("method", "idempotent", "sent"),
    [("PUT", None, 2), ("DELETE", None, 2), ("POST", True, 2), ("PUT", False, 1), ("POST", None, 1)],
)
def test_only_idempotent_requests_are_repeated_after_a_lost_answer(
    loopback: Loopback, method: str, idempotent: bool | None, sent: int
) -> None:
    loopback.replies += [Reply(drop=True), Reply(200, {"ok": True})]
    http = client(loopback, FakeTime())
    if sent == 2:
        assert http.request(method, "x.json", json={}, idempotent=idempotent).json() == {"ok": True}
    else:
        with pytest.raises(ConnectorError):
            http.request(method, "x.json", json={}, idempotent=idempotent)
    assert len(loopback.seen) == sent


@pytest.fixture
def github():  # type: ignore[no-untyped-def]
    from instances.connectors.github import reset_memory

    reset_memory()
    with wired(FakeGitHub(), FakeClock()) as fake:
        yield fake


@pytest.mark.django_db(transaction=True)
def test_a_tracker_item_with_text_that_is_not_valid_unicode_is_refused_and_nothing_is_stored(
    github: FakeGitHub,
) -> None:
    """A lone surrogate in a tracker's answer (JSON allows ``"\\ud800"``) is refused where it comes in, with
    an error naming the tracker that the admin fixes there, and nothing of it is stored (such a value used to
    make every page that showed it a 500)."""
    from django.db import connection as db
    from django.db import transaction

    from instances.models import Issue
    from replicas import pipeline
    from replicas.models import SyncError, SyncEvent
    from replicas.outbox import record_item_change

    project, to_gh, from_gh = _desk_and_github()
    bad = github.add_issue("Printer \ud800 on fire", body="Desk 4", by="octocat")
    with pytest.raises(ConnectorError) as refused:
        pipeline.exalate(connection=from_gh, key=f"octo/widgets#{bad['number']}")
    assert not refused.value.retryable
    assert "GitHub's answer to the request to" in refused.value.message
    assert "not valid Unicode at $.title" in refused.value.message
    assert "Correct it in GitHub" in refused.value.message

    # An item already under sync that someone edits so: the change is blocked with an error, not stored.
    good = github.add_issue("Keyboard missing", body="Desk 4", by="octocat")
    pipeline.exalate(connection=from_gh, key=f"octo/widgets#{good['number']}")
    mirrored = Issue.objects.get(project=project)
    github.edit_issue(good["number"], body="Under desk \udfff 4")
    with transaction.atomic():
        record_item_change(
            instance_id=from_gh.local_instance_id, item_id=str(good["number"]), item_key="", actor="x"
        )
    [error] = SyncError.objects.filter(resolved_at__isnull=True)
    assert "GitHub's answer" in error.message and "not valid Unicode at $.body" in error.message
    assert SyncEvent.objects.filter(status="failed").count() == 1
    mirrored.refresh_from_db()
    assert mirrored.description == "Desk 4"
    with db.cursor() as cursor:
        for table in db.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - table names from the schema
            rows = repr(cursor.fetchall())
            assert "on fire" not in rows and "Under desk" not in rows, table  # nothing of either answer
