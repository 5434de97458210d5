"""The key layout's version: a Redis in an older layout is refused with one line naming
`signq migrate`, the migration moves every kind of key in place (keeping TTLs and
idempotency), and a layout newer than the code is refused too. On a real Redis server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.conftest import delete_prefix
from worker import cli, layout
from worker.cli import common
from worker.errors import LayoutError
from worker.keys import LAYOUT
from worker.settings import Settings
from worker.store import Store


@pytest.fixture
def store(redis_url: str) -> Iterator[Store]:
    prefix = f"t-layout-{uuid.uuid4().hex[:8]}"
    store = Store(Settings(redis_url=redis_url, prefix=prefix))
    yield store
    delete_prefix(redis_url, prefix)
    store.close()


def write_layout_1(store: Store) -> None:
    """What signq wrote before hash tags: an account with a held gate and a parked job, an
    idempotency key with its TTL and a content key, a tracked signature, a callback nonce and
    a webhook slot and FIFO."""
    p, r = store.settings.prefix, store.redis
    r.sadd(f"{p}:accounts", "acme")
    r.hset(f"{p}:account:acme", mapping={"app_key": "k" * 24, "status": "active"})
    r.set(f"{p}:gate:acme", "j1")
    r.zadd(f"{p}:jobs:state:submitting", {"j0": 1})
    r.hset(f"{p}:bucket:acme", mapping={"tokens": "4.5", "ts": "1"})
    r.rpush(f"{p}:parked:acme", "j2")
    r.zadd(f"{p}:jobs:account:acme", {"j1": 1, "j2": 2})
    r.set(f"{p}:idem:acme:order-7", "j1", px=3_600_000)
    r.set(f"{p}:idem:acme:content:abc123", "j2")
    r.hset(f"{p}:sig:acme:9007199254740993", mapping={"status": "0", "since": "1"})
    r.set(f"{p}:callback:nonce:acme:n-1", "1", ex=600)
    r.set(f"{p}:whs:ep_1:acme", "d1")
    r.rpush(f"{p}:whq:ep_1:acme", "d2")


def test_a_new_deployment_is_marked_with_this_layout(store: Store) -> None:
    assert store.layout_version() is None
    store.check_layout()
    assert store.layout_version() == LAYOUT
    assert store.redis.get(store.keys.layout()) == str(LAYOUT)


def test_an_older_layout_is_refused_until_migrated(store: Store) -> None:
    write_layout_1(store)
    with pytest.raises(LayoutError, match=r"key layout 1; .*run signq migrate"):
        store.check_layout()
    assert store.redis.get(store.keys.layout()) is None  # refused: nothing marked


def test_a_process_that_started_before_redis_checks_at_its_first_script(store: Store) -> None:
    """A worker that started while Redis was away (so its start-up check could not run) checks
    before its first script writes anything: old data is refused, not written over."""
    write_layout_1(store)
    with pytest.raises(LayoutError, match="run signq migrate"):
        store.lead("node-1", 1000)
    assert store.redis.get(store.keys.leader()) is None
    layout.migrate(store)
    assert store.lead("node-1", 1000)


def test_the_migration_moves_every_kind_of_key(store: Store) -> None:
    write_layout_1(store)
    p, k, r = store.settings.prefix, store.keys, store.redis
    done = layout.migrate(store)
    assert done.before == 1
    assert done.renamed == {
        "account": 1,
        "gate": 1,
        "parked": 1,
        "jobs_by_account": 1,
        "signature": 1,
        "nonce": 1,
        "wh_slot": 1,
        "wh_fifo": 1,
    }
    assert done.idempotency_keys == 2
    store.check_layout()  # now accepted
    assert r.hget(k.account("acme"), "status") == "active"
    assert r.get(k.gate("acme")) == "j1"
    assert r.lrange(k.parked("acme"), 0, -1) == ["j2"]
    assert r.hget(k.signature("acme", 9007199254740993), "status") == "0"
    assert 0 < r.ttl(k.nonce("acme", "n-1")) <= 600  # a rename keeps the TTL
    assert r.get(k.wh_slot("ep_1", "acme")) == "d1"
    assert not r.exists(k.bucket("acme"))  # rate-limit state is dropped, not moved
    assert not r.exists(f"{p}:jobs:state:submitting")  # running jobs: their leases
    idem = r.hgetall(k.idem("acme"))
    assert idem["key:order-7"] == "j1"
    assert idem["content:abc123"] == "j2"
    expires = int(idem["exp:order-7"])
    assert r.zscore(k.idem_expiry("acme"), "order-7") == expires
    assert 0 < expires - store.time_ms() <= 3_600_000
    assert not [n for n in r.scan_iter(match=f"{p}:*") if "acme" in n and "{" not in n]
    # Run again (as after an interruption): nothing left to move, nothing broken.
    again = layout.migrate(store)
    assert again.renamed == {}
    assert r.get(k.gate("acme")) == "j1"


def test_a_migrated_idempotency_key_still_finds_its_job(store: Store) -> None:
    """The same --key after the migration returns the job it named before."""
    write_layout_1(store)
    layout.migrate(store)
    spec = {
        "id": "j9",
        "account": "acme",
        "gate": False,
        "cap": 0,
        "key": "order-7",
        "content": "",
        "fields": {"account": "acme", "op": "query"},
        "accepted": '{"type": "job.accepted"}',
    }
    (intake,) = store.submit([spec])
    assert (intake.outcome, intake.value) == ("duplicate", "j1")


def test_a_newer_layout_is_refused(store: Store) -> None:
    store.redis.set(store.keys.layout(), LAYOUT + 1)
    with pytest.raises(LayoutError, match="newer than this signq's"):
        store.check_layout()
    with pytest.raises(LayoutError):
        layout.migrate(store)


def test_the_cli_names_the_migration_in_one_line(
    store: Store, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`signq status` on old data: exit 2, one line; `signq migrate --check` says which layout
    (exit 1); `signq migrate` moves it and `status` works again."""
    write_layout_1(store)
    monkeypatch.setenv("SIGNQ_REDIS_URL", store.settings.redis_url)
    monkeypatch.setenv("SIGNQ_PREFIX", store.settings.prefix)
    assert cli.main(["status"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "key layout 1" in err[0]
    assert "signq migrate" in err[0]
    assert cli.main(["migrate", "--check"]) == 1
    assert "key layout 1; this signq uses 2" in capsys.readouterr().out
    assert cli.main(["migrate"]) == 0
    assert "key layout 1 -> 2: renamed 8 keys" in capsys.readouterr().out
    assert cli.main(["status", "--json"]) == 0
    assert cli.main(["migrate"]) == 0
    assert "nothing to move" in capsys.readouterr().out


def test_a_redis_that_does_not_answer_is_left_to_the_command() -> None:
    """The check needs Redis: a command's runtime is still built when Redis does not answer
    yet (the worker and the scheduler wait for it), and the check itself says so."""
    settings = Settings(redis_url="redis://127.0.0.1:1/0", prefix="t")
    rt = common.runtime(settings)
    try:
        with pytest.raises(redis.ConnectionError):
            rt.store.check_layout()
    finally:
        rt.close()
