"""The emulator's API, driven with raw HTTP so the client's own checks are not in the way."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import JPEG, PNG
from worker.emulator import EmulatorAdmin, EmulatorServer
from worker.jsms import Credentials
from worker.testing import wait_for


@pytest.fixture
def http(emulator_server: EmulatorServer, account: Credentials) -> Iterator[httpx.Client]:
    """Raw HTTP to the emulator as the fresh account."""
    with httpx.Client(
        base_url=emulator_server.url, auth=(account.app_key, account.master_secret)
    ) as client:
        yield client


def error_code(response: httpx.Response) -> int:
    """The JSMS code of an error answer."""
    code: int = response.json()["error"]["code"]
    return code


def create(http: httpx.Client, sign: str = "极光推送", **fields: str) -> int:
    """Create a signature, asserting success."""
    response = http.post(
        "/v1/sign", files={"sign": (None, sign), **{k: (None, v) for k, v in fields.items()}}
    )
    assert response.status_code == 200, response.text
    sign_id: int = response.json()["sign_id"]
    return sign_id


def test_pending_then_resolved_by_the_audit_clock(
    emulator_server: EmulatorServer, admin: EmulatorAdmin
) -> None:
    """A new signature is status 0, and the clock resolves it after the account's delay."""
    creds = Credentials("clock" + "a" * 19, "s")
    admin.add_account(creds.app_key, creds.master_secret, audit_delay=0.2)
    with httpx.Client(
        base_url=emulator_server.url, auth=(creds.app_key, creds.master_secret)
    ) as http:
        sign_id = create(http, "时钟REJ")
        assert http.get(f"/v1/sign/{sign_id}").json()["status"] == 0
        wait_for(
            lambda: http.get(f"/v1/sign/{sign_id}").json()["status"] != 0,
            timeout=5,
            what="the emulator's clock to resolve the audit",
        )
        assert http.get(f"/v1/sign/{sign_id}").json()["status"] == 2
        assert admin.signature(sign_id)["refuse_reason"]


def test_one_pending_audit_per_account(http: httpx.Client, admin: EmulatorAdmin) -> None:
    """50103 for create and modify while one is pending; allowed again once it resolves."""
    first = create(http)
    response = http.post("/v1/sign", files={"sign": (None, "第二个")})
    assert (response.status_code, error_code(response)) == (403, 50103)
    response = http.post(f"/v1/sign/{first}", files={"sign": (None, "改一下")})
    assert error_code(response) == 50103
    admin.force(first, status=1)
    assert create(http, "第二个") > first


def test_modify_only_when_rejected(http: httpx.Client, admin: EmulatorAdmin) -> None:
    """Modify of an approved signature is refused; of a rejected one, it goes back to audit."""
    sign_id = create(http)
    admin.force(sign_id, status=1)
    response = http.post(f"/v1/sign/{sign_id}", files={"sign": (None, "改一下")})
    assert error_code(response) == 50102
    second = create(http, "被拒绝")
    admin.force(second, status=2)
    response = http.post(f"/v1/sign/{second}", files={"sign": (None, "改好了")})
    assert response.json() == {"sign_id": second}
    assert http.get(f"/v1/sign/{second}").json()["status"] == 0


def test_delete_in_use_is_50105_and_delete_answers_empty(
    http: httpx.Client, admin: EmulatorAdmin
) -> None:
    """A signature in use cannot be deleted; a deletable one answers 200 with an empty body."""
    default = create(http, "默认")
    admin.force(default, status=1)
    in_use = create(http, "使用中")
    admin.force(in_use, status=1, use_status=1)
    spare = create(http, "备用")
    admin.force(spare, status=1)
    assert error_code(http.delete(f"/v1/sign/{in_use}")) == 50105
    assert error_code(http.delete(f"/v1/sign/{default}")) == 50105
    response = http.delete(f"/v1/sign/{spare}")
    assert (response.status_code, response.content) == (200, b"")
    assert error_code(http.get(f"/v1/sign/{spare}")) == 50102


def test_in_use_marker_and_default_from_the_audit_clock(
    http: httpx.Client, admin: EmulatorAdmin
) -> None:
    """Approved signatures with the USE marker turn in use; the first approved is the default."""
    sign_id = create(http, "USEme")
    admin.force(sign_id, status=1)
    body = http.get(f"/v1/sign/{sign_id}").json()
    assert (body["use_status"], body["is_default"]) == (1, 1)


@pytest.mark.parametrize("path", ["/v1/sign/999999999", "/v1/sign/abc", "/v1/sign/0"])
def test_unknown_ids_are_50102(http: httpx.Client, path: str) -> None:
    """Unknown, non-numeric and zero ids all answer 50102."""
    response = http.get(path)
    assert (response.status_code, error_code(response)) == (403, 50102)


def test_foreign_sign_id_is_50102(
    http: httpx.Client, emulator_server: EmulatorServer, admin: EmulatorAdmin
) -> None:
    """Another account's signature does not exist for this one."""
    other = Credentials("foreign" + "b" * 17, "s2")
    admin.add_account(other.app_key, other.master_secret)
    with httpx.Client(
        base_url=emulator_server.url, auth=(other.app_key, other.master_secret)
    ) as theirs:
        foreign = create(theirs)
    assert error_code(http.get(f"/v1/sign/{foreign}")) == 50102
    assert error_code(http.delete(f"/v1/sign/{foreign}")) == 50102


def test_auth_codes(
    emulator_server: EmulatorServer, account: Credentials, admin: EmulatorAdmin
) -> None:
    """50001 without auth, 50002 with a wrong secret or unknown key, 50008 without SMS service."""
    url = emulator_server.url
    response = httpx.get(f"{url}/v1/sign/1")
    assert (response.status_code, error_code(response)) == (400, 50001)
    response = httpx.get(f"{url}/v1/sign/1", auth=(account.app_key, "wrong"))
    assert (response.status_code, error_code(response)) == (401, 50002)
    response = httpx.get(f"{url}/v1/sign/1", auth=("nobody", "x"))
    assert error_code(response) == 50002
    admin.add_account("nosms" + "c" * 19, "s", sms_enabled=False)
    response = httpx.get(f"{url}/v1/sign/1", auth=("nosms" + "c" * 19, "s"))
    assert (response.status_code, error_code(response)) == (403, 50008)


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("POST", "/v1/sign", {"content": b""}, 400, 50003),
        ("POST", "/v1/sign", {"json": {"sign": "极光"}}, 415, 50017),
        ("POST", "/v1/sign", {"data": {"sign": "极光"}}, 415, 50017),
        ("POST", "/v1/sign", {"files": {"remark": (None, "no sign")}}, 403, 50007),
        ("POST", "/v1/sign", {"files": {"sign": (None, "极光"), "type": (None, "9")}}, 403, 50007),
        (
            "POST",
            "/v1/sign",
            {"files": {"sign": (None, "极光"), "remark": (None, "r" * 101)}},
            403,
            50007,
        ),
        ("POST", "/v1/sign", {"files": {"sign": (None, "【极光】")}}, 403, 50104),
        ("POST", "/v1/sign", {"files": {"sign": (None, "极")}}, 403, 50104),
        (
            "POST",
            "/v1/sign",
            {"files": {"sign": (None, "极光"), "image0": ("a.png", b"GIF89a", "image/png")}},
            403,
            50101,
        ),
        (
            "POST",
            "/v1/sign",
            {
                "files": {
                    "sign": (None, "极光"),
                    "image0": ("a.png", PNG + b"\0" * (2 * 1024 * 1024), "image/png"),
                }
            },
            403,
            50101,
        ),
        ("GET", "/v1/sign", {}, 405, 50018),
        ("PUT", "/v1/sign/1", {}, 405, 50018),
        ("GET", "/v1/signs", {}, 404, 50016),
        ("GET", "/v2/sign/1", {}, 404, 50016),
        ("GET", "/v1/_emulator/stats", {}, 404, 50016),
    ],
)
def test_error_codes(
    http: httpx.Client, method: str, path: str, kwargs: dict[str, object], status: int, code: int
) -> None:
    """Each refusal answers the seed table's code with its HTTP status; admin is not under /v1."""
    response = http.request(method, path, **kwargs)  # type: ignore[arg-type]
    assert (response.status_code, error_code(response)) == (status, code)


def test_what_the_official_sdks_send_is_accepted(http: httpx.Client, admin: EmulatorAdmin) -> None:
    """Trailing slash, repeated `images`, empty optional fields, GET/DELETE with no content type."""
    response = http.post(
        "/v1/sign/",
        files=[
            ("sign", (None, "SDK签名")),
            ("type", (None, "")),
            ("remark", (None, "")),
            ("images", ("a.png", PNG, "image/png")),
            ("images", ("b.jpg", JPEG, "image/jpeg")),
            ("image3", ("", b"", "application/octet-stream")),
        ],
    )
    assert response.status_code == 200, response.text
    sign_id = response.json()["sign_id"]
    seen = admin.signature(sign_id)
    assert (seen["images"], seen["type"], seen["remark"]) == (2, None, None)
    response = http.get(f"/v1/sign/{sign_id}/", headers={"content-type": "application/json"})
    assert response.json()["sign_id"] == sign_id
    admin.force(sign_id, status=2)
    assert http.delete(f"/v1/sign/{sign_id}/").status_code == 200


def test_duplicate_creates_are_counted(
    http: httpx.Client, admin: EmulatorAdmin, account: Credentials
) -> None:
    """Creating the same content while a live copy exists counts as a duplicate."""
    first = create(http, "重复", remark="r")
    admin.force(first, status=1)
    create(http, "重复", remark="other")
    admin.force(first + 1, status=1)
    assert admin.stats(account.app_key)["duplicate_creates"] == 0
    create(http, "重复", remark="r")
    assert admin.stats(account.app_key)["duplicate_creates"] == 1


def test_requests_are_counted_by_operation_and_code(
    http: httpx.Client, admin: EmulatorAdmin, account: Credentials
) -> None:
    """The stats endpoint counts each account's requests by operation and outcome."""
    sign_id = create(http)
    http.get(f"/v1/sign/{sign_id}")
    http.post("/v1/sign", files={"sign": (None, "再来")})
    stats = admin.stats(account.app_key)
    assert stats["requests"] == {"create": {"50000": 1, "50103": 1}, "query": {"50000": 1}}
    assert stats["audit_pending_answers"] == 1


@pytest.mark.parametrize(
    ("rule", "says"),
    [
        ({"kind": "explode"}, "kind must be one of"),
        ({"kind": "error", "rate": 2}, "rate must be between 0 and 1"),
        ({"kind": "error", "operations": ["list"]}, "operations must be a subset"),
        ({"kind": "error", "count": 0}, "count >= 1"),
    ],
)
def test_bad_fault_rules_are_refused_by_name(
    admin: EmulatorAdmin, rule: dict[str, object], says: str
) -> None:
    """The admin API names what is wrong with a fault rule and changes nothing."""
    with pytest.raises(RuntimeError, match=says):
        admin.set_faults([rule], "anyone")


def test_latency_fault_delays_answers(
    http: httpx.Client, admin: EmulatorAdmin, account: Credentials
) -> None:
    """A latency rule slows each matching request by its seconds."""
    admin.set_faults(
        [{"kind": "latency", "seconds": 0.2, "operations": ["query"]}], account.app_key
    )
    started = time.monotonic()
    http.get("/v1/sign/424242")
    assert time.monotonic() - started >= 0.2


def test_seeded_random_faults_hit_about_their_rate(
    http: httpx.Client, admin: EmulatorAdmin, account: Credentials
) -> None:
    """A rate-based rule fires on roughly that share of requests (seeded, bounded loop)."""
    admin.set_faults([{"kind": "error", "rate": 0.5, "operations": ["query"]}], account.app_key)
    outcomes = [http.get("/v1/sign/424242").status_code for _ in range(200)]
    faults = outcomes.count(500)
    assert 60 <= faults <= 140
    assert outcomes.count(403) == 200 - faults


def test_admin_token_guards_admin_only(emulator: object) -> None:
    """With an admin token set, admin calls need it; API paths are unaffected."""
    from worker.emulator import Emulator, EmulatorConfig  # noqa: PLC0415

    guarded = Emulator(EmulatorConfig(admin_token="t0ken"))
    with EmulatorServer(guarded) as server:
        assert httpx.get(f"{server.url}/_emulator/stats").status_code == 403
        assert (
            httpx.get(
                f"{server.url}/_emulator/stats", headers={"X-Emulator-Token": "t0ken"}
            ).status_code
            == 200
        )
        assert error_code(httpx.get(f"{server.url}/v1/sign/1")) == 50001


def test_a_stalled_create_times_the_client_out_and_does_nothing(
    http: httpx.Client, admin: EmulatorAdmin, account: Credentials
) -> None:
    """A stall holds the request past the client's timeout and then cuts it: no signature is
    made, so a retry of it is safe."""
    admin.set_faults(
        [{"kind": "stall", "seconds": 0.3, "count": 1, "operations": ["create"]}], account.app_key
    )
    with pytest.raises(httpx.ReadTimeout):
        http.post("/v1/sign", files={"sign": (None, "卡住")}, timeout=0.1)
    wait_for(
        lambda: admin.stats(account.app_key)["requests"] == {"create": {"fault_stall": 1}},
        timeout=5,
        what="the stalled request to be cut",
    )
    assert admin.stats(account.app_key)["signatures"] == 0
    create(http, "卡住")
    assert admin.stats(account.app_key)["signatures"] == 1


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", b"--x\r\nContent-Disposition: form-data\r\n\r\nv\r\n--x--\r\n"),
        (
            "multipart/form-data; boundary=x",
            b"--x\r\nContent-Disposition: form-data\r\n\r\nv\r\n--x--\r\n",
        ),
    ],
    ids=["no-boundary", "unnamed-part"],
)
def test_a_malformed_multipart_body_is_the_apis_json_50007(
    http: httpx.Client, content_type: str, body: bytes
) -> None:
    """A body the multipart parser refuses (as the C# SDK's unnamed parts are) gets the API's
    JSON error 50007, never a plain-text 400."""
    response = http.post("/v1/sign", content=body, headers={"content-type": content_type})
    assert response.headers["content-type"].startswith("application/json")
    assert (response.status_code, error_code(response)) == (403, 50007)


def test_media_types_are_case_insensitive(http: httpx.Client) -> None:
    """Multipart/Form-Data is multipart/form-data."""
    body = b'--b\r\nContent-Disposition: form-data; name="sign"\r\n\r\nABCD\r\n--b--\r\n'
    response = http.post(
        "/v1/sign", content=body, headers={"content-type": "Multipart/Form-Data; boundary=b"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["sign_id"] > 0


def test_an_image_sent_as_a_text_field_is_refused(http: httpx.Client) -> None:
    """image0 as a plain field, not a file: 50101, as the API answers."""
    response = http.post("/v1/sign", files={"sign": (None, "图片"), "image0": (None, "notafile")})
    assert (response.status_code, error_code(response)) == (403, 50101)


def test_an_accounts_file_with_a_byte_order_mark_loads(tmp_path: Path) -> None:
    """--accounts-file written by a spreadsheet (UTF-8 with BOM) reads as plain UTF-8."""
    from worker.emulator.server import load_accounts  # noqa: PLC0415

    path = tmp_path / "accounts.csv"
    path.write_bytes("\ufeffapp_key,master_secret\nk1,s1\n".encode())
    assert load_accounts(path) == [{"app_key": "k1", "master_secret": "s1"}]
