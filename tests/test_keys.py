"""Every key name in one place, for Python and for the Lua scripts alike."""

from __future__ import annotations

import re

import pytest
import redis

from worker.keys import Keys, member, parse_member


def test_lua_builders_name_the_same_keys_as_python(redis_url: str) -> None:
    """Each N.name(...) the scripts use builds exactly what Keys.name(...) builds."""
    keys = Keys("pfx")
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        script = (
            "local P = ARGV[1]\nlocal function key(name) return name end\n" + keys.lua() + "\n"
            "return {N.job('j1'), N.gate('acme'), N.signature('acme', '42'), N.due(),"
            " N.unconfirmed('acme'), N.idem('acme'), N.wh_slot('ep_1', 'acme'), K.bucket('*')}"
        )
        built = client.eval(script, 0, "pfx")
    finally:
        client.close()
    assert built == [
        keys.job("j1"),
        keys.gate("acme"),
        keys.signature("acme", 42),
        keys.due(),
        keys.unconfirmed("acme"),
        keys.idem("acme"),
        keys.wh_slot("ep_1", "acme"),
        keys.bucket("*"),
    ]


def test_every_per_account_key_carries_the_account_as_its_hash_tag() -> None:
    """An account's keys share one Cluster slot: each names the account in braces, and it is
    the key's first brace pair (what Redis hashes)."""
    keys = Keys("signq")
    account = "acme.eu-1"
    per_account = [
        keys.account(account),
        keys.gate(account),
        keys.parked(account),
        keys.waiting(account),
        keys.unconfirmed(account),
        keys.orphans(account),
        keys.bucket(account),
        keys.jobs_by_account(account),
        keys.idem(account),
        keys.idem_expiry(account),
        keys.signature(account, 2**63 - 1),
        keys.nonce(account, "n0nce"),
        keys.wh_fifo("ep_1", account),
        keys.wh_slot("ep_1", account),
    ]
    for name in per_account:
        assert re.search(r"\{([^}]*)\}", name)[1] == account, name  # type: ignore[index]
    assert keys.gate("a") != keys.gate("b")
    assert "{" not in keys.job("j1")
    assert "{" not in keys.outbox()


def test_dramatiq_queue_names_are_dramatiq_own() -> None:
    """Queue, delay queue and dead letters are named as Dramatiq's RedisBroker names them."""
    keys = Keys("p")
    assert keys.dramatiq_queue("signq") == "p:dramatiq:signq"
    assert keys.dramatiq_delayed("signq") == "p:dramatiq:signq.DQ"
    assert keys.dramatiq_dead("signq") == "p:dramatiq:signq.XQ"
    assert keys.dramatiq_dead_bodies("signq") == "p:dramatiq:signq.XQ.msgs"


@pytest.mark.parametrize(("account", "sign_id"), [("acme", 1), ("a.b-c_d", 2**63 - 1)])
def test_a_due_member_round_trips(account: str, sign_id: int) -> None:
    """account:sign_id is built and parsed by one codec, long ids exactly."""
    assert parse_member(member(account, sign_id)) == (account, sign_id)
