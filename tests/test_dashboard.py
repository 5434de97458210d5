"""The dashboard in a real browser: Debian's chromium driven by Playwright (its own browser
download is not used). Login with the token, refusals without it and without the CSRF token,
live figures and events, a parked job and its account, a dead letter retried, an unconfirmed
create confirmed; screenshots of the main pages at 1280x800 saved as artifacts."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page

from tests.system import System, build_system
from worker.dashboard import build_app
from worker.emulator import EmulatorAdmin, EmulatorServer
from worker.emulator.server import ThreadedServer
from worker.testing import answers, wait_for

pytestmark = pytest.mark.slow
TOKEN = "dashboard-test-token-0123456789"
ARTIFACTS = Path(os.environ.get("SIGNQ_ARTIFACTS", Path(__file__).parent.parent / "artifacts"))
CHROMIUM = os.environ.get("SIGNQ_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def _browser_or_fail() -> str:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"no chromium at {CHROMIUM}: install Debian's chromium (apt-get install chromium) "
            "or set SIGNQ_CHROMIUM; .ci/run installs it"
        )
    return CHROMIUM


@pytest.fixture
def dash(emulator_server: EmulatorServer, admin: EmulatorAdmin) -> Iterator[tuple[System, str]]:
    """A system with the dashboard served on loopback."""
    system = build_system(emulator_server, admin)
    server = ThreadedServer(build_app(system.runtime, TOKEN)).start()
    try:
        yield system, server.url
    finally:
        server.stop()
        system.runtime.close()


@pytest.fixture
def page(dash: tuple[System, str]) -> Iterator[Page]:
    """A chromium page at 1280x800."""
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=_browser_or_fail(),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        tab = context.new_page()
        tab.set_default_timeout(15_000)
        try:
            yield tab
        finally:
            context.close()
            browser.close()


def shot(tab: Page, name: str) -> None:
    """A screenshot kept as an artifact of the run."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"))


def test_without_the_token_every_page_is_refused(dash: tuple[System, str]) -> None:
    """No cookie: 401 on pages, the API and the event stream; a wrong token is refused at
    login; the cookie is HttpOnly and SameSite=Strict and is not the token."""
    _system, url = dash
    with httpx.Client(base_url=url, follow_redirects=False) as http:
        for path in ("/", "/accounts", "/jobs", "/api/overview", "/events/stream", "/dlq"):
            assert http.get(path).status_code == 401, path
        assert http.post("/jobs/x/cancel", data={"csrf": "x"}).status_code == 401
        assert http.post("/login", data={"token": "wrong-token-wrong-token"}).status_code == 401
        ok = http.post("/login", data={"token": TOKEN})
        assert ok.status_code == 303
        cookie = ok.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
        assert TOKEN not in cookie
        assert http.get("/").status_code == 200


def test_an_action_without_the_csrf_token_is_refused(dash: tuple[System, str]) -> None:
    """Logged in, a POST without the form's CSRF token changes nothing."""
    system, url = dash
    account = system.tenant()
    with httpx.Client(base_url=url, follow_redirects=False) as http:
        http.post("/login", data={"token": TOKEN})
        refused = http.post(f"/accounts/{account}/pause", data={})
        assert refused.status_code == 403
        forged = http.post(f"/accounts/{account}/pause", data={"csrf": "0" * 64})
        assert forged.status_code == 403
    assert system.runtime.accounts.require(account).status == "active"


def test_read_only_mode_shows_no_action_and_refuses_them(
    emulator_server: EmulatorServer, admin: EmulatorAdmin
) -> None:
    """--read-only: the pages have no buttons and a POST is refused even with the CSRF token."""
    import re  # noqa: PLC0415

    system = build_system(emulator_server, admin)
    account = system.tenant()
    server = ThreadedServer(build_app(system.runtime, TOKEN, read_only=True)).start()
    try:
        with httpx.Client(base_url=server.url, follow_redirects=False) as http:
            http.post("/login", data={"token": TOKEN})
            html = http.get(f"/accounts/{account}").text
            assert "read-only" in html
            assert "<button" not in html
            csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
            assert csrf is None
            from worker.dashboard.app import _digest  # noqa: PLC0415

            done = http.post(f"/accounts/{account}/pause", data={"csrf": _digest(TOKEN, "csrf")})
            assert done.status_code == 403
        assert system.runtime.accounts.require(account).status == "active"
    finally:
        server.stop()
        system.runtime.close()


def test_an_operator_session_in_the_browser(dash: tuple[System, str], page: Page) -> None:
    """Log in with the token; see the onboarding's figures change live; open a parked job and
    its account; watch an event arrive without a reload; retry a dead letter; confirm an
    unconfirmed create with its sign id."""
    system, url = dash
    tab = page
    rt = system.runtime
    account = system.tenant()
    first = rt.jobs.create(account, "第一个").job_id
    parked = rt.jobs.create(account, "排队中").job_id
    system.drain()
    assert rt.jobs.require(parked).state == "parked"

    tab.goto(f"{url}/")
    assert "needs its token" in tab.content()
    tab.goto(f"{url}/login")
    tab.fill("input[name=token]", TOKEN)
    tab.click("button[type=submit]")
    tab.wait_for_selector("h1:has-text('Overview')")
    pending = tab.locator("[data-field='jobs/pending_audit']")
    before = int(pending.inner_text())
    # Onboarding goes on while the page is open: the figure follows without a reload.
    other = system.tenant()
    rt.jobs.create(other, "实时的")
    system.drain()
    wait_for(lambda: int(pending.inner_text()) == before + 1, timeout=15, what="a live figure")
    shot(tab, "overview")

    tab.goto(f"{url}/jobs?state=parked")
    tab.click(f"a[href='/jobs/{parked}']")
    tab.wait_for_selector(f"h1:has-text('{parked}')")
    assert "parked" in tab.content()
    shot(tab, "job")
    tab.click(f"dd a[href='/accounts/{account}']")
    tab.wait_for_selector(f"h1:has-text('Account {account}')")
    assert first[:12] in tab.content()
    shot(tab, "account")

    tab.goto(f"{url}/events")
    tab.wait_for_selector("#live-state:has-text('live')")
    rt.accounts.pause(account, "seen live")
    tab.wait_for_selector("#events tr.arrived td:has-text('account.paused')")
    shot(tab, "events")
    rt.dispatch.jobs(rt.accounts.resume(account))

    # A dead letter, retried from the browser.
    from dramatiq.message import Message  # noqa: PLC0415

    from worker.broker import build_broker  # noqa: PLC0415

    broker = build_broker(rt.settings)
    try:
        queue = rt.settings.queue
        message = Message(
            queue_name=queue, actor_name="signq.run_job", args=("x",), kwargs={}, options={}
        )
        keys = rt.store.keys
        rt.store.redis.zadd(keys.dramatiq_dead(queue), {message.message_id: 1})
        rt.store.redis.hset(
            keys.dramatiq_dead_bodies(queue), message.message_id, message.encode().decode()
        )
        tab.goto(f"{url}/dlq")
        assert message.message_id in tab.content()
        shot(tab, "dlq")
        tab.click("td button:has-text('Retry')")
        tab.wait_for_selector("p.flash:has-text('1 dead letter(s) sent again')")
        assert rt.store.redis.zcard(keys.dramatiq_dead(queue)) == 0
    finally:
        broker.close()

    # An unconfirmed create, confirmed with the sign id the operator found.
    stuck = system.tenant()
    job = rt.jobs.create(stuck, "没回音").job_id
    creds = system.credentials(stuck)
    sign_id = rt.client.create(
        creds, __import__("worker.jsms", fromlist=["SignRequest"]).SignRequest("没回音")
    )
    store = rt.store
    store.redis.hset(store.keys.job(job), "state", "submitting")
    rt.pipeline.to.unconfirmed(rt.jobs.require(job), "test: no answer")
    assert rt.jobs.require(job).state == "unconfirmed"
    tab.goto(f"{url}/unconfirmed")
    row = tab.locator(f"tr:has(a[href='/jobs/{job}'])")
    row.locator("input[name=sign_id]").fill(str(sign_id))
    shot(tab, "unconfirmed")
    row.locator("button:has-text('Confirm')").click()
    tab.wait_for_selector(f"p.flash:has-text('confirmed as sign id {sign_id}')")
    assert rt.jobs.require(job).state == "pending_audit"
    assert rt.jobs.require(job).sign_id == sign_id


def test_the_overview_shows_status_figures(dash: tuple[System, str]) -> None:
    """The live overview's JSON: jobs by state, the oldest pending audit, paused and blocked
    accounts, API errors by code from failed jobs, and workers' heartbeats."""
    system, url = dash
    rt = system.runtime
    busy, paused, failing = system.tenant(), system.tenant(), system.tenant()
    pending = rt.jobs.create(busy, "等审核").job_id
    rt.jobs.query(failing, 987_654)
    system.drain()
    rt.accounts.pause(paused, "for the overview")
    beats = f"{rt.store.keys.dramatiq_namespace()}:__heartbeats__"
    rt.store.redis.zadd(beats, {"worker-abcdef123": rt.store.time_ms() - 2000})
    with httpx.Client(base_url=url, follow_redirects=True) as http:
        http.post("/login", data={"token": TOKEN})
        data = http.get("/api/overview").json()
        html = http.get("/").text
    assert data["jobs"]["pending_audit"] >= 1
    assert pending in [a["job_id"] for a in data["oldest_audits"]]
    assert paused in data["paused"]
    assert data["errors"] == {"50102": 1}  # the query of a sign id the account does not have
    (worker,) = [w for w in data["workers"] if w["worker"] == "worker-a"]
    assert 1.5 <= worker["heartbeat_s"] <= 10
    assert f'href="/accounts/{paused}"' in html


def test_mounted_in_another_app_its_links_and_login_follow_the_mount(
    emulator_server: EmulatorServer, admin: EmulatorAdmin
) -> None:
    """Mounted at /signq in another Starlette app: login, the cookie's path, the pages' links
    and the account page's signatures all live under the mount."""
    from starlette.applications import Starlette  # noqa: PLC0415
    from starlette.routing import Mount  # noqa: PLC0415

    system = build_system(emulator_server, admin)
    account = system.tenant()
    job = system.runtime.jobs.create(account, "挂载的").job_id
    system.drain()
    sign_id = system.runtime.jobs.require(job).sign_id
    host = Starlette(routes=[Mount("/signq", app=build_app(system.runtime, TOKEN))])
    server = ThreadedServer(host).start()
    try:
        with httpx.Client(base_url=server.url, follow_redirects=False) as http:
            assert http.get("/signq/").status_code == 401
            login = http.post("/signq/login", data={"token": TOKEN})
            assert login.headers["location"] == "/signq/"
            assert "Path=/signq/" in login.headers["set-cookie"]
            html = http.get(f"/signq/accounts/{account}").text
            assert f'href="/signq/jobs/{job}"' in html
            assert 'href="/signq/static/dashboard.css"' in html
            assert f"<td>{sign_id}</td>" in html
            assert http.get("/signq/static/dashboard.js").status_code == 200
    finally:
        server.stop()
        system.runtime.close()


def test_the_dashboard_command_serves_with_a_printed_token(redis_url: str) -> None:
    """`signq dashboard --port 0` (the entry point's smoke test): the printed URL names the
    free port it listens on and logs in, the bare URL is refused."""
    import re  # noqa: PLC0415
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    env = {**os.environ, "SIGNQ_LOG_LEVEL": "WARNING"}
    env.pop("SIGNQ_DASHBOARD_TOKEN", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "worker", "dashboard", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        # Port 0: a free port, and the line names the one the server listens on.
        found = re.match(r"signq dashboard: http://127\.0\.0\.1:(\d+)/\?token=", line)
        assert found, line
        port = int(found.group(1))
        assert port > 0
        url = line.split(": ", 1)[1].strip()
        wait_for(lambda: answers(f"http://127.0.0.1:{port}/login", process), what="the dashboard")
        assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 401
        with httpx.Client(follow_redirects=True) as http:
            page = http.get(url)
            assert page.status_code == 200
            assert "Overview" in page.text
    finally:
        process.terminate()
        process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream:
                stream.close()


def test_accounts_are_paged_and_searched_by_name(dash: tuple[System, str]) -> None:
    """The accounts list: a page of 50 in name order with a link to the next, a prefix search,
    and each account's gate holder and parked count."""
    import re  # noqa: PLC0415

    system, url = dash
    rt = system.runtime
    for n in range(55):
        rt.accounts.add(f"paged{n:03d}", f"key{n:021d}", "secret")
    busy = system.tenant("paged-busy")
    holder = rt.jobs.create(busy, "持有者").job_id
    rt.jobs.create(busy, "排队的")
    with httpx.Client(base_url=url, follow_redirects=True) as http:
        http.post("/login", data={"token": TOKEN})
        first = http.get("/accounts", params={"q": "paged"}).text
        names = re.findall(r'<td><a href="/accounts/(paged[^"]+)">', first)
        assert names == sorted(names)
        assert len(names) == 50
        assert names[0] == "paged-busy"
        nxt = re.search(r'href="\?q=paged&after=([^"]+)">next page', first)
        assert nxt
        second = http.get(f"/accounts?q=paged&after={nxt.group(1)}").text
        rest = re.findall(r'<td><a href="/accounts/(paged[^"]+)">', second)
        assert rest == [f"paged{n:03d}" for n in range(49, 55)]
        assert f'href="/jobs/{holder}"' in first
        one = http.get("/accounts", params={"q": "paged007"}).text
        assert re.findall(r'<td><a href="/accounts/(paged[^"]+)">', one) == ["paged007"]


def test_bad_input_is_refused_by_name_and_unknown_ids_are_404(dash: tuple[System, str]) -> None:
    """A confirm with a sign id that is not a number, a retry of a job that is not failed, an
    unknown job or account: the operator reads why, and nothing changes."""
    import re  # noqa: PLC0415

    from worker.dashboard.app import _digest  # noqa: PLC0415

    system, url = dash
    account = system.tenant()
    job = system.runtime.jobs.create(account, "坏输入").job_id
    csrf = _digest(TOKEN, "csrf")
    with httpx.Client(base_url=url, follow_redirects=True) as http:
        http.post("/login", data={"token": TOKEN})
        page = http.post(f"/jobs/{job}/confirm", data={"csrf": csrf, "sign_id": "abc"}).text
        flash = re.search(r'<p class="flash" role="status">([^<]+)</p>', page)
        assert flash
        assert flash.group(1) == "refused: sign id must be a positive integer, got &#39;abc&#39;"
        retried = http.post(f"/jobs/{job}/retry", data={"csrf": csrf}).text
        assert "refused: job " in retried
        assert "only a failed or cancelled job is retried" in retried
        assert http.get("/jobs/no-such-job").status_code == 404
        missing = http.get("/accounts/nobody-here")
        assert missing.status_code == 404
        assert "nobody-here" in missing.text
        unknown = http.post(f"/jobs/{job}/explode", data={"csrf": csrf}).text
        assert "refused: no action &#39;explode&#39;" in unknown
    assert system.runtime.jobs.require(job).state == "queued"


def test_a_token_from_the_environment_is_not_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    """With SIGNQ_DASHBOARD_TOKEN set, `signq dashboard` prints its URL and where the token
    comes from, never the token itself."""
    import uvicorn  # noqa: PLC0415

    from worker.net import free_port  # noqa: PLC0415
    from worker.testing import run_cli  # noqa: PLC0415

    served: list[int] = []

    def run(server: uvicorn.Server, sockets: list[socket.socket]) -> None:
        served.append(sockets[0].getsockname()[1])
        sockets[0].close()

    monkeypatch.setattr(uvicorn.Server, "run", run)
    env = {**os.environ, "SIGNQ_DASHBOARD_TOKEN": TOKEN}
    port = free_port()
    done = run_cli(["dashboard", "--port", str(port)], env=env)
    assert done.returncode == 0
    assert done.stdout == (
        f"signq dashboard: http://127.0.0.1:{port}/ (log in with SIGNQ_DASHBOARD_TOKEN)\n"
    )
    assert TOKEN not in done.stdout
    assert served == [port]


def test_the_live_event_stream_resumes_after_the_last_event_a_browser_had(
    dash: tuple[System, str],
) -> None:
    """A browser's EventSource reconnects with Last-Event-ID: the stream sends what came after
    that id (nothing is lost across a reconnect); without one it starts at the end."""
    from worker import events  # noqa: PLC0415

    system, url = dash
    redis_, stream = system.runtime.store.redis, system.runtime.store.keys.events()
    ids = [
        redis_.xadd(stream, {"event": events.make("job.accepted", "sse", job_id=f"j{n}")})
        for n in range(3)
    ]

    def first_event(headers: dict[str, str]) -> str:
        with httpx.Client(base_url=url, timeout=10) as http:
            http.post("/login", data={"token": TOKEN})
            with http.stream("GET", "/events/stream", headers=headers) as reply:
                for line in reply.iter_lines():
                    if line.startswith("id: "):
                        return line[4:]
                    if line == ": keep-alive":
                        # Nothing after the start: publish one, the stream must send it.
                        redis_.xadd(stream, {"event": events.make("job.accepted", "sse")})
        raise AssertionError("the stream ended without an event")

    assert first_event({"Last-Event-ID": ids[0]}) == ids[1]
    newest = first_event({})
    assert newest not in ids  # the backlog is not replayed to a new page
