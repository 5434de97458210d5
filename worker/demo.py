"""The demo: signq's main job end to end on embedded defaults (no network, no installed Redis)."""

from __future__ import annotations

import time

from worker.emulator import AuditRules, Emulator, EmulatorConfig, EmulatorServer
from worker.emulator.server import EmulatorAdmin
from worker.jsms import Credentials, Image, JsmsClient, Signature, SignRequest, Status
from worker.jsms.errors import SignatureInUse
from worker.settings import Settings

# 1x1 PNG: the demo's audit image.
DEMO_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)


def run_round_trip(settings: Settings, *, audit_delay: float = 0.5) -> int:
    """Create, query until resolved, modify a rejection, delete: against the emulator."""
    emulator = Emulator(EmulatorConfig(rules=AuditRules(audit_delay=audit_delay, in_use_rate=0)))
    with EmulatorServer(emulator) as server:
        admin = EmulatorAdmin(server.url)
        creds = Credentials("demo00000000appkey", "demo-master-secret")
        admin.add_account(creds.app_key, creds.master_secret)
        client = JsmsClient.from_settings(settings.with_overrides(api_url=server.api_url))
        started = time.monotonic()
        try:
            sign_id = client.create(
                creds, SignRequest("极光REJ", images=(Image(DEMO_PNG, "logo"),))
            )
            print(f"created sign_id={sign_id} (pending audit)")
            signature = _wait(client, creds, sign_id)
            print(f"audit result: {signature.status.name.lower()}")
            if signature.status is Status.REJECTED:
                client.modify(creds, sign_id, SignRequest("极光推送", type=1, remark="fixed"))
                print(f"modified sign_id={sign_id}, back in audit")
                signature = _wait(client, creds, sign_id)
                print(f"audit result: {signature.status.name.lower()}")
            try:
                client.delete(creds, sign_id)
                print(f"deleted sign_id={sign_id}")
            except SignatureInUse as exc:
                print(f"delete refused: {exc}")
        finally:
            client.close()
            admin.close()
        stats = emulator.world.stats()
        print(f"API requests: {stats['requests']}; {time.monotonic() - started:.1f} s")
    return 0


def _wait(client: JsmsClient, creds: Credentials, sign_id: int) -> Signature:
    while True:
        signature = client.query(creds, sign_id)
        if signature.status is not Status.PENDING:
            return signature
        time.sleep(0.1)
