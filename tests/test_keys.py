"""Every key name in one place, for Python and for the Lua scripts alike."""

from __future__ import annotations

import pytest
import redis

from worker.keys import Keys, member, parse_member


def test_lua_builders_name_the_same_keys_as_python(redis_url: str) -> None:
    """Each K.name(...) the scripts use builds exactly what Keys.name(...) builds."""
    keys = Keys("pfx")
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        script = (
            "local P = ARGV[1]\n" + keys.lua() + "\n"
            "return {K.job('j1'), K.gate('acme'), K.signature('acme', '42'), K.due(),"
            " K.unconfirmed('acme'), K.idem('acme', 'k')}"
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
        keys.idem("acme", "k"),
    ]


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
