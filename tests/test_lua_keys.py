"""Every Lua script declares every key it touches, so that the layout can move to a Redis
Cluster: a parse of each script holds that each key a command names is built by a checked
builder (``K.name``, which fails on a key not in ``KEYS``), and runs show the check and the
asking for keys (``want``) at work."""

from __future__ import annotations

import re
import uuid
from importlib import resources
from pathlib import Path

import fakeredis
import pytest
import redis

from tests.conftest import delete_prefix
from worker.keys import Keys
from worker.settings import Settings
from worker.store import _HEADER, KeysWanted, Store, _lua

LUA = Path(str(resources.files("worker").joinpath("lua")))
SCRIPTS = sorted(p.stem for p in LUA.glob("*.lua") if p.stem != "lib")
# Commands that name no key.
KEYLESS = {"TIME"}


def calls(source: str) -> list[list[str]]:
    """The arguments of every ``redis.call(...)``/``redis.pcall(...)``, as source text."""
    found = []
    for match in re.finditer(r"redis\.p?call\(", source):
        found.append(arguments(source, match.end()))
    return found


def arguments(source: str, start: int) -> list[str]:
    """Split the argument list that starts at ``start`` (just past its parenthesis)."""
    args, depth, current, i = [], 0, "", start
    while i < len(source):
        c = source[i]
        if c in "'\"":
            end = source.index(c, i + 1)
            current += source[i : end + 1]
            i = end + 1
            continue
        if c in "({[":
            depth += 1
        elif c in ")}]":
            if depth == 0:
                args.append(current.strip())
                return args
            depth -= 1
        elif c == "," and depth == 0:
            args.append(current.strip())
            current = ""
            i += 1
            continue
        current += c
        i += 1
    raise AssertionError("unbalanced redis.call")


def key_names(source: str) -> set[str]:
    """Local names bound to checked keys: ``local a = K.x(..)``, ``local a, b = K.x(), K.y()``."""
    bound = set()
    for names, values in re.findall(r"local ([\w, ]+) = (K\.[^\n]+)", source):
        parts = [n.strip() for n in names.split(",")]
        exprs = [v.strip() for v in re.split(r",\s*(?=K\.)", values)]
        bound |= {n for n, e in zip(parts, exprs, strict=False) if e.startswith("K.")}
    return bound


def key_parameters(source: str) -> dict[str, str]:
    """lib.lua's helpers whose first parameter is a key: function name -> parameter."""
    return {
        name: param
        for name, param in re.findall(r"local function (\w+)\((\w+)[,)]", source)
        if param == "key"
    }


def is_checked(expr: str, bound: set[str]) -> bool:
    return expr.startswith("K.") or expr in bound


@pytest.mark.parametrize("name", ["lib", *SCRIPTS])
def test_every_key_a_script_names_is_a_checked_one(name: str) -> None:
    """Each command's key is a K.name(...) built key, or a local bound to one, or the key
    parameter of a helper whose every call passes one; no key is spelled out or made from the
    prefix, and N.name (a name only) appears only where the script asks for a key."""
    source = _lua(name)
    bound = key_names(source) | key_names(_lua("lib"))
    helpers = key_parameters(_lua("lib"))
    for args in calls(source):
        command = args[0].strip("'\"").upper()
        if command in KEYLESS:
            continue
        key = args[1]
        if name == "lib" and key in helpers.values():
            continue  # a helper's key parameter: its callers are checked below
        assert is_checked(key, bound), f"{name}.lua: {command} on an unchecked key {key!r}"
    for helper in helpers:
        for match in re.finditer(rf"(?<![\w.]){helper}\(", source):
            if source[max(0, match.start() - 15) : match.start()].endswith("local function "):
                continue
            first = arguments(source, match.end())[0]
            assert is_checked(first, bound), f"{name}.lua: {helper}({first}, ...) unchecked"
    assert "KEYS[" not in source, f"{name}.lua indexes KEYS itself"
    assert not re.search(r"\bP\s*\.\.", source), f"{name}.lua builds a key from the prefix"
    for match in re.finditer(r"\bN\.\w+\(", source):
        assert source[: match.start()].endswith("want("), (
            f"{name}.lua uses a name it did not ask for: {source[match.start() : match.end() + 20]}"
        )


def test_the_parse_finds_an_unchecked_key() -> None:
    """The checks above can fail: a spelled-out key and one made from the prefix are caught."""
    assert not is_checked("'signq:gate:acme'", set())
    assert not is_checked("P .. ':gate:' .. account", set())
    assert is_checked("K.gate(account)", set())
    assert calls("redis.call('GET', K.gate(a), 'x')") == [["'GET'", "K.gate(a)", "'x'"]]
    assert key_names("local idem, expiry = K.idem(a), K.idem_expiry(a)") == {"idem", "expiry"}


def test_a_key_not_declared_fails_the_script(redis_url: str) -> None:
    """K.name refuses a key the caller did not declare (as a Redis Cluster would refuse a key of
    another slot), before the script touches it."""
    settings = Settings(redis_url=redis_url, prefix=f"t-undeclared-{uuid.uuid4().hex[:8]}")
    store = Store(settings)
    try:
        with pytest.raises(redis.ResponseError, match=r"did not declare: .*scheduler:leader"):
            store._run("lead", "node-1", 1000)
        assert store.redis.exists(store.keys.leader()) == 0
        assert store.lead("node-1", 1000)
    finally:
        delete_prefix(redis_url, settings.prefix)
        store.close()


def test_a_script_asks_for_the_keys_only_a_record_names() -> None:
    """repair finds the gate's holder in the gate and asks for its record's key; the store runs
    it again with that key declared, and the repair is done."""
    store = Store(Settings(prefix="t"), client=fakeredis.FakeRedis(decode_responses=True))
    store.redis.set(store.keys.gate("acme"), "j1")
    store.redis.hset(store.keys.job("j1"), mapping={"state": "approved", "account": "acme"})
    store.redis.rpush(store.keys.parked("acme"), "j2")
    first = store._scripts["repair"](
        keys=[*store._shared, *store.account_keys("acme")], args=store._argv(["acme"])
    )
    assert first == ["__want", store.keys.job("j1")]
    assert store.redis.get(store.keys.gate("acme")) == "j1"  # nothing written before asking
    repaired = store._run("repair", "acme", keys=[*store._shared, *store.account_keys("acme")])
    assert repaired == ["released", "j2"]
    assert store.redis.get(store.keys.gate("acme")) == "j2"


def test_a_script_that_keeps_asking_is_an_error() -> None:
    """A script whose wants never end (here: a new key each run) stops after a few runs with an
    error naming it, instead of looping."""
    store = Store(Settings(prefix="t"), client=fakeredis.FakeRedis(decode_responses=True))
    library = store.keys.lua() + "\n" + _lua("lib")
    store._scripts["restless"] = store.redis.register_script(
        _HEADER + library + "\nwant(N.job(tostring(CLOCK[1]) .. CLOCK[2] .. math.random()))\n"
        "return wanting() or {'done'}"
    )
    with pytest.raises(KeysWanted, match=r"lua/restless\.lua still asked for keys"):
        store._run("restless")


def test_the_keys_module_builds_the_names_the_scripts_ask_for() -> None:
    """Keys and the Lua builders agree on the per-account hash tag (a sanity check of the
    template syntax: ``[n]`` tagged, ``{n}`` plain)."""
    keys = Keys("p")
    assert keys.gate("acme") == "p:gate:{acme}"
    assert keys.signature("acme", 7) == "p:sig:{acme}:7"
    assert keys.wh_slot("ep_1", "acme") == "p:whs:ep_1:{acme}"
    assert keys.job("j1") == "p:job:j1"
