"""What a person sees for a condition they can cause: one line naming it, never a traceback."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from io import StringIO
from urllib.parse import urlsplit

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.conftest import RABBITMQ_URL, require_rabbitmq
from worker import cli
from worker.errors import AccountError, EmbeddedRedisError, JobError
from worker.jsms.errors import ValidationError
from worker.runtime import Runtime
from worker.scheduler import Scheduler
from worker.settings import Settings
from worker.testing import RecordingDispatcher

UNREACHABLE = "redis://:hunter2@127.0.0.1:1/0"


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["accounts", "list"],
        ["jobs", "list"],
        ["submit", "query", "--account", "a", "--sign-id", "5"],
        ["events"],
        ["demo", "--no-live", "--tenants", "1", "--signatures", "1"],
    ],
)
def test_an_unreachable_redis_is_one_line_naming_it(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Redis away: exit 2 and one line with the URL (password masked) and what to check."""
    monkeypatch.setenv("SIGNQ_REDIS_URL", UNREACHABLE)
    assert cli.main(argv) == 2
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1, out.err
    assert lines[0].startswith("signq: cannot reach Redis at redis://:***@127.0.0.1:1/0")
    assert "SIGNQ_REDIS_URL" in lines[0]
    assert "hunter2" not in out.err + out.out


def test_a_url_that_is_not_a_redis_url_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A malformed SIGNQ_REDIS_URL is refused by name before anything connects."""
    monkeypatch.setenv("SIGNQ_REDIS_URL", "notaurl")
    assert cli.main(["status"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err == "signq: SIGNQ_REDIS_URL must be a redis://, rediss:// or unix:// URL, got 'notaurl'"
    )


def test_a_closed_pipe_ends_the_command_quietly(redis_url: str) -> None:
    """`signq events | head -1`: the reader leaves early; no traceback, exit 0."""
    settings = Settings.from_env()
    rt = Runtime.build(settings)
    try:
        for n in range(2000):
            rt.store.redis.xadd(rt.store.keys.events(), {"event": f'{{"id": "{n}"}}'})
        command = [sys.executable, "-m", "worker", "events"]
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
            assert proc.stdout is not None
            proc.stdout.readline()
            proc.stdout.close()
            _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0
        assert b"Traceback" not in err
        assert err == b""
    finally:
        rt.store.redis.delete(rt.store.keys.events())
        rt.close()


def test_the_scheduler_waits_out_a_redis_outage_with_one_warning(
    log_capture: Callable[[str], StringIO],
) -> None:
    """Long-running processes log one structured warning, back off, and stop cleanly."""
    buffer = log_capture("INFO")
    settings = Settings.from_env().with_overrides(redis_url=UNREACHABLE, tick_seconds=0.05)
    rt = Runtime.build(settings)
    scheduler = Scheduler(rt.store, rt.tracker, RecordingDispatcher(), "n1")
    stop = threading.Event()
    thread = threading.Thread(target=scheduler.run, args=(stop,))
    thread.start()
    threading.Event().wait(1.0)
    stop.set()
    thread.join(timeout=10)
    rt.close()
    text = buffer.getvalue()
    assert not thread.is_alive()
    assert text.count('"redis_unavailable"') == 1, text
    assert "tick_failed" not in text
    assert "Traceback" not in text
    assert "hunter2" not in text


def test_events_since_garbage_is_refused_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    """--since takes a stream id; anything else is one line saying so."""
    assert cli.main(["events", "--since", "garbage"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "signq: --since must be a stream id such as 1795776316441-0 (or 0 for the beginning), "
        "got 'garbage'"
    )


def test_times_are_shown_as_iso_and_kept_as_ms_in_json(
    system: object, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`jobs show` prints ISO times; `--json` keeps milliseconds."""
    rt = system.runtime  # type: ignore[attr-defined]
    monkeypatch.setenv("SIGNQ_PREFIX", rt.settings.prefix)
    account = system.tenant()  # type: ignore[attr-defined]
    job = rt.jobs.query(account, 5).job_id
    assert cli.main(["jobs", "show", job]) == 0
    shown = capsys.readouterr().out
    assert re.search(r"created_at\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", shown)
    assert cli.main(["jobs", "show", job, "--json"]) == 0
    assert isinstance(json.loads(capsys.readouterr().out)["created_at"], int)


def test_every_error_of_the_core_is_one_tree_with_an_exit_code() -> None:
    """signq's own errors all derive from SignqError (embedders catch one class), keep the
    built-in base their callers relied on, and carry the exit code the CLI uses."""
    import inspect  # noqa: PLC0415

    from worker import errors  # noqa: PLC0415

    classes = [
        c
        for _, c in inspect.getmembers(errors, inspect.isclass)
        if issubclass(c, Exception) and c.__module__ == errors.__name__
    ]
    assert len(classes) >= 8
    for cls in classes:
        assert issubclass(cls, errors.SignqError), cls
        assert cls.exit_code in (errors.USAGE, errors.UNAVAILABLE), cls
    assert issubclass(errors.JobError, ValueError)
    assert issubclass(errors.SecretKeyError, errors.AccountError)
    assert issubclass(cli.CliError, errors.SignqError)


@pytest.mark.parametrize(
    ("error", "code", "line"),
    [
        (JobError("the thing named here is wrong"), 2, "the thing named here is wrong"),
        (AccountError("account x is not registered"), 2, "account x is not registered"),
        (EmbeddedRedisError("redis-server exited"), 69, "redis-server exited"),
        (ValidationError("sign", "must be 2-8 characters"), 2, "sign: must be 2-8 characters"),
    ],
)
def test_the_cli_maps_each_error_to_its_exit_code_in_one_line(
    error: Exception,
    code: int,
    line: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Whatever core error a command meets, the person sees `signq: message` and the
    error's exit code, never a traceback."""

    def refuse(*_args: object) -> int:
        raise error

    monkeypatch.setattr("worker.cli.jobs.jobs_list", refuse)
    assert cli.main(["jobs", "list"]) == code
    assert capsys.readouterr().err == f"signq: {line}\n"


def test_the_embedded_redis_runner_names_a_missing_server_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`python -m worker.embedded_redis -- CMD` with nothing answering at SIGNQ_REDIS_URL
    and no redis-server binary anywhere: one line naming what to install, exit 69."""
    from worker import embedded_redis  # noqa: PLC0415

    monkeypatch.setenv("SIGNQ_REDIS_URL", UNREACHABLE)
    monkeypatch.setattr(embedded_redis.importlib.util, "find_spec", lambda _name: None)
    monkeypatch.setattr(embedded_redis.shutil, "which", lambda _name: None)
    assert embedded_redis.main(["--", "true"]) == 69
    err = capsys.readouterr().err
    assert err.startswith("signq: no redis-server found: install Redis")
    assert err.count("\n") == 1


def test_an_unreachable_rabbitmq_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGNQ_BROKER_URL at a closed port: exit 2, one line with the URL (password masked) and
    what to check; pika's own traceback is not logged."""
    monkeypatch.setenv("SIGNQ_BROKER_URL", "amqp://guest:hunter2@127.0.0.1:1/%2F")
    assert cli.main(["status"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "signq: cannot reach RabbitMQ at amqp://guest:***@127.0.0.1:1/%2F "
        "(AMQPConnectionError): check that it is running and that SIGNQ_BROKER_URL points at it\n"
    )


@pytest.mark.parametrize(
    ("user", "vhost", "says"),
    [
        ("guest:wrong-password", "%2F", "refused the user or password: check SIGNQ_BROKER_URL"),
        (
            "guest:guest",
            "signq-no-such-vhost",
            "refused access to the virtual host: check that it exists, that the user may use "
            "it, and the path of SIGNQ_BROKER_URL (%2F is the default)",
        ),
    ],
    ids=["password", "vhost"],
)
def test_a_rabbitmq_that_refuses_names_what_to_check(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    user: str,
    vhost: str,
    says: str,
) -> None:
    """A RabbitMQ that answers but refuses the login or the virtual host: exit 2, one line that
    says which (password masked), never "is it running". Against the test run's RabbitMQ."""
    require_rabbitmq()
    address = urlsplit(RABBITMQ_URL).netloc.rpartition("@")[2]
    monkeypatch.setenv("SIGNQ_BROKER_URL", f"amqp://{user}@{address}/{vhost}")
    assert cli.main(["status"]) == 2
    masked = f"amqp://guest:***@{address}/{vhost}"
    assert capsys.readouterr().err == f"signq: RabbitMQ at {masked} {says}\n"


def test_sentinels_that_do_not_answer_are_one_line_naming_them(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], redis_url: str
) -> None:
    """SIGNQ_REDIS_SENTINELS at a closed port, then at a Redis that is no sentinel: exit 2, one
    line naming the sentinels and the primary's name, without redis-py's client repr."""
    monkeypatch.setenv("SIGNQ_REDIS_MASTER", "mymaster")
    not_a_sentinel = urlsplit(redis_url).netloc.rpartition("@")[2]
    for sentinels, cause in [
        ("127.0.0.1:1", "Connection refused"),
        (not_a_sentinel, "unknown command 'SENTINEL'"),
    ]:
        monkeypatch.setenv("SIGNQ_REDIS_SENTINELS", sentinels)
        assert cli.main(["status"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(
            f"signq: no Redis primary named 'mymaster' from the sentinels at {sentinels} ("
        ), err
        assert cause in err
        assert err.endswith(
            "check that they run and SIGNQ_REDIS_SENTINELS and SIGNQ_REDIS_MASTER\n"
        )
        assert "<redis." not in err
        assert err.count("\n") == 1


def test_a_primary_the_sentinels_name_but_that_does_not_answer_is_named() -> None:
    """The sentinels answer, the primary they name does not: the line says so, not 'no primary'."""
    settings = Settings(redis_sentinels="127.0.0.1:26379", redis_master="mymaster")
    exc = RedisConnectionError("Error 111 connecting to 127.0.0.1:6380. Connection refused.")
    assert cli.redis_problem(exc, settings) == (
        "cannot reach the Redis primary 'mymaster' the sentinels at 127.0.0.1:26379 name "
        "(Connection refused): check that it is running"
    )


@pytest.mark.parametrize("command", ["dashboard", "callbacks", "emulator"])
def test_a_server_port_in_use_or_out_of_range_is_one_line(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A port another server holds: exit 2 and one line naming the address, before anything is
    printed as if serving; a port out of range is refused by the parser."""
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        assert cli.main([command, "--port", str(port)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"signq: cannot listen on 127.0.0.1:{port}: Address already in use; "
        "choose another --host or --port\n"
    )
    with pytest.raises(SystemExit) as refused:
        cli.main([command, "--port", "70000"])
    assert refused.value.code == 2
    assert "--port: must be 0-65535 (0: a free port), got 70000" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--processes", "--threads"])
def test_a_worker_with_no_processes_or_threads_is_refused(
    flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`signq worker --threads 0` would start a worker that never takes a message: refused."""
    with pytest.raises(SystemExit) as refused:
        cli.main(["worker", flag, "0"])
    assert refused.value.code == 2
    assert f"argument {flag}: must be at least 1, got 0" in capsys.readouterr().err


def test_a_server_host_that_does_not_resolve_is_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`signq dashboard --host` with a name nothing resolves: exit 2, one line naming it."""
    assert cli.main(["dashboard", "--host", "signq-no-such-host.invalid", "--port", "0"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("signq: cannot listen on signq-no-such-host.invalid:0: ")
    assert captured.err.endswith("; choose another --host or --port\n")
    assert captured.err.count("\n") == 1
