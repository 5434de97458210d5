"""Signed webhooks against a real receiver on loopback that verifies with the same library:
signing, retries, permanent failures, order per account, replay, disabling, SSRF refusal."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import standardwebhooks

from tests.receiver import Receiver, receiver
from tests.system import System, build_system
from worker.emulator import EmulatorAdmin, EmulatorServer
from worker.errors import WebhookError
from worker.testing import RecordingDispatcher
from worker.webhooks import WebhookVerificationError, new_secret, verify
from worker.webhooks.signing import headers as signed_headers
from worker.webhooks.target import TargetRefused, check_url, resolve


@pytest.fixture
def hooks(emulator_server: EmulatorServer, admin: EmulatorAdmin) -> Iterator[System]:
    """A system that may send to loopback, with a short retry schedule and a short timeout."""
    system = build_system(
        emulator_server,
        admin,
        webhooks_allow_private=True,
        webhook_retry_schedule="0,0.01,0.01,0.01",
        webhook_timeout=0.5,
    )
    yield system
    system.runtime.close()


def flush(system: System, rounds: int = 30) -> list[str]:
    """Fan out and send until nothing is left to send: each round pumps, runs every delivery
    it sent for (and those their hand-offs send), and makes what is scheduled due now (Redis's
    clock cannot be moved; the schedule's waits are what is skipped). Returns the outcomes."""
    dispatcher = system.runtime.dispatch
    assert isinstance(dispatcher, RecordingDispatcher)
    deliveries = system.runtime.deliveries
    r, due = system.runtime.store.redis, system.runtime.store.keys.wh_due()
    outcomes: list[str] = []
    for _ in range(rounds):
        deliveries.pump()
        if not dispatcher.deliveries and not r.zcard(due):
            return outcomes
        while dispatcher.deliveries:
            outcomes.append(deliveries.deliver(dispatcher.deliveries.pop(0)))
        ids = r.zrange(due, 0, -1)
        if ids:
            r.zadd(due, dict.fromkeys(ids, 0), xx=True)
    raise AssertionError(f"deliveries still pending after {rounds} rounds: {outcomes}")


def test_a_delivery_is_the_event_exactly_as_on_the_stream_signed(hooks: System) -> None:
    """Each event becomes one POST: the body is the stream's JSON byte for byte, webhook-id is
    the event id, and the signature verifies with the endpoint's secret."""
    account = hooks.tenant()
    with receiver() as rx:
        endpoint, secret = hooks.runtime.endpoints.add(rx.url)
        rx.secret = secret
        assert secret.startswith("whsec_")
        hooks.runtime.jobs.create(account, "签名一")
        hooks.drain()
        assert flush(hooks) == ["delivered", "delivered"]
    stream = [
        fields["event"]
        for _, fields in hooks.runtime.store.redis.xrange(hooks.runtime.store.keys.events())
    ]
    assert [r.body.decode() for r in rx.received] == stream[-2:]
    assert all(r.verified == "ok" for r in rx.received)
    assert [r.headers["webhook-id"] for r in rx.received] == [
        json.loads(e)["id"] for e in stream[-2:]
    ]
    assert [e["type"] for e in rx.events()] == ["job.accepted", "signature.submitted"]
    assert rx.received[0].headers["webhook-signature"].startswith("v1,")
    assert hooks.runtime.endpoints.require(endpoint.id).failing_since is None


def test_failures_are_retried_and_every_attempt_recorded(hooks: System) -> None:
    """500, a dropped connection and a timeout are retried on the schedule; the fourth
    attempt succeeds; each attempt is in the endpoint's record with its status and duration."""
    account = hooks.tenant()
    with receiver(script=[500, "drop", ("sleep", 1.5)]) as rx:
        endpoint, rx.secret = hooks.runtime.endpoints.add(rx.url, types=["job.accepted"])
        hooks.runtime.jobs.create(account, "重试")
        assert flush(hooks) == ["retry", "retry", "retry", "delivered"]
    attempts = hooks.runtime.deliveries.attempts(endpoint.id)
    assert [a["outcome"] for a in attempts] == ["delivered", "retry", "retry", "retry"]
    assert [a["status"] for a in attempts] == [200, None, None, 500]
    assert [a["attempt"] for a in attempts] == [4, 3, 2, 1]
    assert attempts[-1]["body"] == "no thanks"
    assert "Timeout" in attempts[1]["error"]
    assert all(a["duration_ms"] >= 0 for a in attempts)
    # Each try carried the same webhook-id, so a receiver can dedupe.
    assert len({r.headers["webhook-id"] for r in rx.received}) == 1


def test_a_4xx_is_permanent_and_the_next_event_still_goes(hooks: System) -> None:
    """400 is not retried: the delivery is dead at once and visible; the account's next
    event takes its turn. 408, 409 and 429 are retried."""
    account = hooks.tenant()
    with receiver(script=[400, 409]) as rx:
        endpoint, rx.secret = hooks.runtime.endpoints.add(rx.url)
        hooks.runtime.jobs.create(account, "拒收")
        hooks.drain()
        assert flush(hooks) == ["dead", "retry", "delivered"]
    dead = hooks.runtime.deliveries.dead(endpoint.id)
    assert len(dead) == 1
    assert dead[0]["error"] == "HTTP 400 (permanent)"
    assert [e["type"] for e in rx.events()] == [
        "job.accepted",
        "signature.submitted",
        "signature.submitted",
    ]


def test_retry_after_is_honoured(hooks: System) -> None:
    """A 429 with Retry-After waits at least that long, even when the schedule says less."""
    account = hooks.tenant()
    with receiver(script=[(429, {"retry-after": "30"})]) as rx:
        _endpoint, rx.secret = hooks.runtime.endpoints.add(rx.url)
        hooks.runtime.jobs.create(account, "慢点")
        deliveries, dispatcher = hooks.runtime.deliveries, hooks.runtime.dispatch
        deliveries.pump()
        assert isinstance(dispatcher, RecordingDispatcher)
        (delivery,) = dispatcher.deliveries
        now = hooks.runtime.store.time_ms()
        assert deliveries.deliver(delivery) == "retry"
        store = hooks.runtime.store
        next_at = int(store.redis.hget(store.keys.wh_delivery(delivery), "next_at"))
        assert 29_000 <= next_at - now <= 31_000


def test_after_the_schedule_a_delivery_is_dead(hooks: System) -> None:
    """A receiver that always fails: four attempts (the schedule's length), then dead."""
    account = hooks.tenant()
    with receiver(default=503) as rx:
        endpoint, rx.secret = hooks.runtime.endpoints.add(rx.url, types=["job.accepted"])
        hooks.runtime.jobs.create(account, "总失败")
        assert flush(hooks) == ["retry", "retry", "retry", "dead"]
    assert len(rx.received) == 4
    assert hooks.runtime.deliveries.dead(endpoint.id)[0]["error"] == "HTTP 503"
    assert hooks.runtime.endpoints.require(endpoint.id).failing_since is not None


def test_an_endpoint_failing_past_the_period_is_disabled_with_an_event(
    hooks: System,
) -> None:
    """Failing since longer than SIGNQ_WEBHOOK_DISABLE_AFTER_HOURS: the endpoint is disabled,
    webhook.endpoint_disabled is published, and what it still had queued dies as
    'endpoint disabled' (replay re-sends it once it is fixed)."""
    account = hooks.tenant()
    store = hooks.runtime.store
    with receiver(default=500) as rx:
        endpoint, rx.secret = hooks.runtime.endpoints.add(rx.url, types=["job.accepted"])
        hooks.runtime.jobs.create(account, "坏端点一")
        hooks.runtime.deliveries.pump()
        dispatcher = hooks.runtime.dispatch
        assert isinstance(dispatcher, RecordingDispatcher)
        assert hooks.runtime.deliveries.deliver(dispatcher.deliveries.pop()) == "retry"
        # The failing period began six days ago (the default limit is five).
        six_days = 6 * 86_400_000
        store.redis.hset(
            store.keys.webhook(endpoint.id), "failing_since", store.time_ms() - six_days
        )
        outcomes = flush(hooks)
    assert outcomes[0] == "retry"
    assert outcomes[-1] == "dead"
    after = hooks.runtime.endpoints.require(endpoint.id)
    assert not after.enabled
    assert "failing" in after.disabled_reason
    disabled = [e for e in hooks.events() if e["type"] == "webhook.endpoint_disabled"]
    assert [e["endpoint"] for e in disabled] == [endpoint.id]
    assert hooks.runtime.endpoints.set_enabled(endpoint.id, True)
    assert hooks.runtime.endpoints.require(endpoint.id).failing_since is None


def test_replay_sends_what_an_endpoint_missed_again(hooks: System) -> None:
    """`replay --since` re-sends the events from a stream id (or a time) that the endpoint's
    filters match, with their original webhook-ids."""
    account = hooks.tenant()
    with receiver() as rx:
        endpoint, rx.secret = hooks.runtime.endpoints.add(rx.url, accounts=[account])
        hooks.runtime.jobs.create(account, "重放")
        hooks.drain()
        hooks.tenant()  # another account's events are not this endpoint's
        flush(hooks)
        first = rx.events()
        assert [e["type"] for e in first] == ["job.accepted", "signature.submitted"]
        stream = hooks.runtime.store.redis.xrange(hooks.runtime.store.keys.events())
        since = next(sid for sid, f in stream if json.loads(f["event"])["id"] == first[0]["id"])
        assert hooks.runtime.deliveries.replay(endpoint.id, since) == 2
        flush(hooks)
        assert [e["id"] for e in rx.events()] == [e["id"] for e in first] * 2
        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        assert hooks.runtime.deliveries.replay(endpoint.id, later) == 0
    with pytest.raises(WebhookError, match="--since must be a stream id"):
        hooks.runtime.deliveries.replay(endpoint.id, "yesterday-ish")


def test_filters_and_the_test_event(hooks: System) -> None:
    """An endpoint gets only its types and accounts; `test` sends webhook.test to it alone;
    a new endpoint gets no history."""
    first, second = hooks.tenant(), hooks.tenant()
    hooks.runtime.jobs.create(first, "以前的")
    with receiver() as rx:
        endpoint, rx.secret = hooks.runtime.endpoints.add(
            rx.url, types=["signature.submitted"], accounts=[second]
        )
        hooks.runtime.jobs.create(first, "第一家")
        hooks.runtime.jobs.create(second, "第二家")
        hooks.drain()
        hooks.runtime.deliveries.test(endpoint.id)
        flush(hooks)
    got = rx.events()
    # Different accounts go in parallel: no order between them.
    assert sorted((e["type"], e["account"]) for e in got) == [
        ("signature.submitted", second),
        ("webhook.test", ""),
    ]
    with pytest.raises(WebhookError, match=r"unknown event type 'job\.done'"):
        hooks.runtime.endpoints.add("https://example.invalid/x", types=["job.done"])


def test_a_removed_endpoint_drops_what_it_had_queued(hooks: System) -> None:
    """Deliveries queued for an endpoint that is removed are dropped as they come due."""
    account = hooks.tenant()
    with receiver() as rx:
        endpoint, rx.secret = hooks.runtime.endpoints.add(rx.url)
        hooks.runtime.jobs.create(account, "删掉")
        hooks.runtime.endpoints.remove(endpoint.id)
        assert flush(hooks) == []
        assert rx.received == []
    assert endpoint.id not in [e.id for e in hooks.runtime.endpoints.list()]
    with pytest.raises(WebhookError, match="no webhook endpoint"):
        hooks.runtime.deliveries.test(endpoint.id)


def test_loopback_is_refused_unless_allowed(
    emulator_server: EmulatorServer, admin: EmulatorAdmin
) -> None:
    """Without SIGNQ_WEBHOOKS_ALLOW_PRIVATE, a target resolving to loopback is never
    contacted: the delivery is dead, naming why."""
    system = build_system(emulator_server, admin)
    try:
        account = system.tenant()
        with receiver() as rx:
            endpoint, rx.secret = system.runtime.endpoints.add(rx.url, types=["job.accepted"])
            system.runtime.jobs.create(account, "内网")
            assert flush(system) == ["dead"]
            assert rx.received == []
        (dead,) = system.runtime.deliveries.dead(endpoint.id)
        assert "internal address (127.0.0.1)" in dead["error"]
    finally:
        system.runtime.close()


@pytest.mark.parametrize(
    "url",
    ["http://10.1.2.3/x", "http://169.254.169.254/latest", "http://[::1]/x", "http://0.0.0.0/"],
)
def test_internal_targets_are_refused(url: str) -> None:
    """Private, link-local (cloud metadata), loopback and unspecified addresses."""
    with pytest.raises(TargetRefused, match="internal address"):
        resolve(url, allow_private=False)


def test_a_public_target_is_pinned_to_its_address() -> None:
    """The request goes to the checked address; Host and TLS keep the name."""
    target = resolve("https://93.184.216.34:8443/hook?x=1", allow_private=False)
    assert target.url == "https://93.184.216.34:8443/hook?x=1"
    assert target.host == "93.184.216.34:8443"
    assert target.sni == "93.184.216.34"
    loop = resolve("http://localhost:9/x", allow_private=True)
    assert loop.url in ("http://127.0.0.1:9/x", "http://[::1]:9/x")
    assert loop.host == "localhost:9"
    assert loop.sni is None


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://example.com/x", "http:// or https://"),
        ("not a url", "http:// or https://"),
        ("https://user:pw@example.com/x", "user or password"),
        ("https://example.com:99999/x", "bad port"),
    ],
)
def test_bad_urls_are_refused_at_registration(url: str, why: str) -> None:
    """Only http(s) URLs with a host, no credentials, a real port."""
    with pytest.raises(WebhookError, match=why):
        check_url(url)


def test_verify_accepts_a_signed_delivery_and_refuses_forgeries() -> None:
    """``worker.webhooks.verify``: a good delivery gives its event; a changed body, another
    secret, a stale or future timestamp, missing or malformed headers are refused."""
    secret = new_secret()
    body = '{"id":"e1","type":"webhook.test","account":""}'
    good = signed_headers(secret, "e1", body)
    assert verify(good, body, secret) == json.loads(body)
    assert verify(good, body.encode(), secret)["id"] == "e1"
    stale = signed_headers(secret, "e1", body, at=datetime.now(UTC) - timedelta(minutes=10))
    future = signed_headers(secret, "e1", body, at=datetime.now(UTC) + timedelta(minutes=10))
    forged = {**good, "webhook-signature": "v1,AAAA"}
    cases = [
        (good, body.replace("e1", "e2"), secret),
        (good, body, new_secret()),
        (stale, body, secret),
        (future, body, secret),
        ({k: v for k, v in good.items() if k != "webhook-id"}, body, secret),
        ({**good, "webhook-signature": "garbage"}, body, secret),
        (forged, body, secret),
    ]
    for headers, data, key in cases:
        with pytest.raises(WebhookVerificationError):
            verify(headers, data, key)
    # The same library verifies what signq signs: a receiver in any language can too.
    assert standardwebhooks.Webhook(secret).verify(body, good) == json.loads(body)


def test_secrets_are_sealed_at_rest_and_never_listed(
    emulator_server: EmulatorServer, admin: EmulatorAdmin
) -> None:
    """With SIGNQ_SECRET_KEY set, the stored secret is Fernet ciphertext; listings never carry
    it; a secret given must be a whsec_ secret."""
    from cryptography.fernet import Fernet  # noqa: PLC0415

    system = build_system(emulator_server, admin, secret_key=Fernet.generate_key().decode())
    try:
        secret = new_secret()
        endpoint, returned = system.runtime.endpoints.add("https://example.com/h", secret=secret)
        assert returned == secret
        stored = system.runtime.store.redis.hget(
            system.runtime.store.keys.webhook(endpoint.id), "secret"
        )
        assert secret not in stored
        assert secret.removeprefix("whsec_") not in stored
        listed = json.dumps([e.to_dict() for e in system.runtime.endpoints.list()])
        assert secret not in listed
        assert "secret" not in listed
        assert system.runtime.endpoints.secret(endpoint) == secret
        with pytest.raises(WebhookError, match="whsec_"):
            system.runtime.endpoints.add("https://example.com/h", secret="hunter2")
    finally:
        system.runtime.close()


def test_a_secret_this_worker_cannot_open_is_retried_not_sent(
    emulator_server: EmulatorServer, admin: EmulatorAdmin
) -> None:
    """An endpoint sealed with another SIGNQ_SECRET_KEY: the delivery is not sent unsigned and
    not dropped; the attempt names the key problem and the delivery waits for a retry."""
    from cryptography.fernet import Fernet  # noqa: PLC0415

    sealer = build_system(
        emulator_server,
        admin,
        secret_key=Fernet.generate_key().decode(),
        webhooks_allow_private=True,
    )
    try:
        account = sealer.tenant()
        with receiver() as rx:
            endpoint, rx.secret = sealer.runtime.endpoints.add(rx.url, types=["job.accepted"])
            sealer.runtime.jobs.create(account, "换了钥匙")
            # The same Redis, read by a worker holding another key.
            from worker.accounts import SecretBox  # noqa: PLC0415

            sealer.runtime.endpoints.box = SecretBox(Fernet.generate_key().decode())
            deliveries, dispatcher = sealer.runtime.deliveries, sealer.runtime.dispatch
            deliveries.pump()
            assert isinstance(dispatcher, RecordingDispatcher)
            (delivery,) = dispatcher.deliveries
            assert deliveries.deliver(delivery) == "retry"
            assert rx.received == []
        (attempt,) = deliveries.attempts(endpoint.id)
        assert attempt["outcome"] == "retry"
        assert "SIGNQ_SECRET_KEY does not decrypt its secret" in attempt["error"]
        assert f"webhook endpoint {endpoint.id}" in attempt["error"]
    finally:
        sealer.runtime.close()


def test_a_receiver_helper_sees_each_answer(hooks: System) -> None:
    """The test receiver itself verifies: a delivery signed with another secret is marked."""
    account = hooks.tenant()
    with receiver() as rx:
        _endpoint, _secret = hooks.runtime.endpoints.add(rx.url, types=["job.accepted"])
        rx.secret = new_secret()  # not the endpoint's
        hooks.runtime.jobs.create(account, "别的钥匙")
        flush(hooks)
    assert isinstance(rx, Receiver)
    assert rx.received
    assert rx.received[0].verified == "No matching signature found"
    assert rx.events() == []


def test_adding_an_internal_target_warns_that_deliveries_will_be_refused(hooks: System) -> None:
    """`signq webhooks add http://127.0.0.1/...` without SIGNQ_WEBHOOKS_ALLOW_PRIVATE: added
    (the workers' setting is the one that counts) with a one-line warning saying why each send
    will die; with the setting, or for a public address, no warning."""
    import os  # noqa: PLC0415

    from worker.testing import run_cli  # noqa: PLC0415

    env = {**os.environ, "SIGNQ_PREFIX": hooks.settings.prefix}
    env.pop("SIGNQ_WEBHOOKS_ALLOW_PRIVATE", None)
    warned = run_cli(["webhooks", "add", "http://127.0.0.1:9/hook"], env=env)
    assert warned.returncode == 0
    assert warned.stderr == (
        "signq: warning: 127.0.0.1 resolves to an internal address (127.0.0.1); set "
        "SIGNQ_WEBHOOKS_ALLOW_PRIVATE=1 to allow it — until the workers run with it, every "
        "delivery to this endpoint is refused and dies\n"
    )
    allowed = run_cli(
        ["webhooks", "add", "http://127.0.0.1:9/hook"],
        env={**env, "SIGNQ_WEBHOOKS_ALLOW_PRIVATE": "1"},
    )
    assert (allowed.returncode, allowed.stderr) == (0, "")
    public = run_cli(["webhooks", "add", "https://93.184.216.34/hook"], env=env)
    assert (public.returncode, public.stderr) == (0, "")


def test_the_cli_manages_endpoints_and_shows_attempts(hooks: System, tmp_path: object) -> None:
    """`signq webhooks add/list/test/attempts/disable/enable/replay/remove`, in-process: the
    secret is printed once at add and never by list; mistakes are one line and exit 2."""
    import os  # noqa: PLC0415
    import re  # noqa: PLC0415

    from worker.testing import run_cli  # noqa: PLC0415

    env = {
        **os.environ,
        "SIGNQ_PREFIX": hooks.settings.prefix,
        "SIGNQ_WEBHOOKS_ALLOW_PRIVATE": "1",
    }
    with receiver() as rx:
        added = run_cli(["webhooks", "add", rx.url, "--type", "webhook.test"], env=env)
        assert added.returncode == 0, added.stderr
        endpoint = re.search(r"webhook endpoint (ep_[0-9a-f]+) added", added.stdout)
        secret = re.search(r"(whsec_\S+)", added.stdout)
        assert endpoint
        assert secret
        rx.secret, endpoint_id = secret.group(1), endpoint.group(1)
        listed = run_cli(["webhooks", "list"], env=env)
        assert endpoint_id in listed.stdout
        assert rx.secret not in listed.stdout
        assert "types=webhook.test" in listed.stdout
        assert run_cli(["webhooks", "test", endpoint_id], env=env).returncode == 0
        flush(hooks)
        assert [e["type"] for e in rx.events()] == ["webhook.test"]
        attempts = run_cli(["webhooks", "attempts", endpoint_id, "--json"], env=env)
        (attempt,) = [json.loads(line) for line in attempts.stdout.splitlines()]
        assert (attempt["outcome"], attempt["status"]) == ("delivered", 200)
        shown = run_cli(["webhooks", "attempts", endpoint_id], env=env).stdout
        assert "delivered  HTTP 200" in shown
        off = run_cli(["webhooks", "disable", endpoint_id], env=env)
        assert off.stdout.strip() == f"webhook endpoint {endpoint_id} disabled"
        assert "disabled (disabled by operator)" in run_cli(["webhooks", "list"], env=env).stdout
        again = run_cli(["webhooks", "enable", endpoint_id], env=env)
        assert again.stdout.strip() == f"webhook endpoint {endpoint_id} enabled"
        replayed = run_cli(["webhooks", "replay", endpoint_id, "--since", "0-0"], env=env)
        assert replayed.returncode == 0
        assert replayed.stdout.startswith("0 event(s)")  # webhook.test never goes on the stream
        removed = run_cli(["webhooks", "remove", endpoint_id], env=env)
        assert removed.stdout.strip() == f"webhook endpoint {endpoint_id} removed"
    for argv, message in (
        (["webhooks", "add", "ftp://x/y"], "signq: webhook URL must be an http:// or https://"),
        (["webhooks", "test", "ep_nope"], "signq: no webhook endpoint 'ep_nope'"),
        (["webhooks", "replay", "ep_nope", "--since", "0-0"], "signq: no webhook endpoint"),
        (
            ["webhooks", "add", "https://x.example/h", "--secret-file", "/nonexistent/s"],
            "signq: --secret-file",
        ),
    ):
        done = run_cli(argv, env=env)
        assert done.returncode == 2, argv
        assert done.stderr.startswith(message), done.stderr
        assert "Traceback" not in done.stderr
