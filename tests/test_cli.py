"""The signq command: the emulator serves the API; bad flags are clear errors."""

from __future__ import annotations

import subprocess
import sys

from worker.emulator.server import free_port
from worker.jsms import Credentials, JsmsClient, SignRequest, Status
from worker.testing import CliResult, answers, run_cli, wait_for


def signq(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `python -m worker ARGS` and capture its output."""
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_emulator_command_serves_the_api(tmp_path: object) -> None:
    """`signq emulator` with an accounts file serves create and query over HTTP."""
    from pathlib import Path  # noqa: PLC0415

    accounts = Path(str(tmp_path)) / "accounts.csv"
    accounts.write_text("app_key,master_secret\nclikey00000000000000000,cli-secret\n")
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worker",
            "emulator",
            "--port",
            str(port),
            "--accounts-file",
            str(accounts),
            "--audit-delay",
            "0.1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(
            lambda: answers(f"http://127.0.0.1:{port}/_emulator/health", process),
            what="the emulator",
        )
        creds = Credentials("clikey00000000000000000", "cli-secret")
        with JsmsClient(f"http://127.0.0.1:{port}/v1") as jsms:
            sign_id = jsms.create(creds, SignRequest("命令行PASS"))
            wait_for(
                lambda: jsms.query(creds, sign_id).status is not Status.PENDING,
                timeout=10,
                what="the audit",
            )
            assert jsms.query(creds, sign_id).status is Status.APPROVED
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stderr:
            process.stderr.close()


def test_bad_account_flag_is_a_clear_error() -> None:
    """A malformed --account is refused with exit 2, naming the flag, without echoing the secret."""
    result = signq("emulator", "--account", "no-colon-here")
    assert result.returncode == 2
    assert "--account must be APP_KEY:SECRET" in result.stderr


def test_missing_accounts_file_is_a_clear_error() -> None:
    """A missing accounts file is named in the error."""
    result = signq("emulator", "--accounts-file", "/nonexistent/accounts.csv")
    assert result.returncode == 2
    assert "/nonexistent/accounts.csv" in result.stderr


def test_bad_setting_is_a_clear_error() -> None:
    """An unusable environment variable stops the command with its name."""
    import os  # noqa: PLC0415

    result = subprocess.run(
        [sys.executable, "-m", "worker", "demo"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "SIGNQ_READ_TIMEOUT": "never"},
    )
    assert result.returncode == 2
    assert "SIGNQ_READ_TIMEOUT='never'" in result.stderr


def test_submit_and_jobs_commands(tmp_path: object, redis_url: str) -> None:
    """`signq submit create` prints a job id; `jobs show --json` reads it back; `jobs cancel`
    settles it; bad input exits 2 naming the field; nothing secret is printed."""
    import json  # noqa: PLC0415
    import os  # noqa: PLC0415
    import uuid  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from tests.conftest import delete_prefix  # noqa: PLC0415
    from tests.helpers import PNG  # noqa: PLC0415

    prefix = f"signqcli-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "SIGNQ_PREFIX": prefix, "SIGNQ_REDIS_URL": redis_url}

    def run(*args: str, stdin: str = "") -> CliResult:
        return run_cli(args, env=env, stdin=stdin)

    image = Path(str(tmp_path)) / "license.png"
    image.write_bytes(PNG)
    try:
        assert (
            run("accounts", "add", "acme", "--app-key", "k" * 24, stdin="s3cr3t\n").returncode == 0
        )
        submission = (
            "submit",
            "create",
            "--account",
            "acme",
            "--sign",
            "极光推送",
            "--image",
            str(image),
            "--type",
            "1",
        )
        created = run(*submission, "--json")
        assert created.returncode == 0, created.stderr
        job_id = json.loads(created.stdout)["job_id"]
        shown = json.loads(run("jobs", "show", job_id, "--json").stdout)
        assert (shown["state"], shown["sign"], shown["images"], shown["type"]) == (
            "queued",
            "极光推送",
            ["license"],
            1,
        )
        again = run(*submission)
        assert again.stdout.split()[0] == job_id
        assert "already submitted" in again.stdout
        listed = run("jobs", "list", "--account", "acme")
        assert job_id in listed.stdout
        assert run("jobs", "cancel", job_id).returncode == 0
        assert json.loads(run("jobs", "show", job_id, "--json").stdout)["state"] == "cancelled"
        bad = run("submit", "create", "--account", "acme", "--sign", "【坏】")
        assert bad.returncode == 2
        assert "sign: may hold only" in bad.stderr
        missing = run("submit", "query", "--account", "nobody", "--sign-id", "1")
        assert missing.returncode == 2
        assert "no account named 'nobody'" in missing.stderr
        assert "s3cr3t" not in "".join([created.stdout, created.stderr, listed.stdout])
    finally:
        delete_prefix(redis_url, prefix)
