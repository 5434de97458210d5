"""Small shared test helpers: sample images and emulator counters."""

from __future__ import annotations

from worker.emulator import EmulatorAdmin
from worker.jsms import Image

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 64 + b"\xff\xd9"


def png(name: str = "logo") -> Image:
    """A tiny real PNG."""
    return Image(PNG, name)


def jpeg(name: str = "license") -> Image:
    """Bytes that start like a JPEG."""
    return Image(JPEG, name)


def requests(admin: EmulatorAdmin, app_key: str, operation: str) -> dict[str, int]:
    """Requests the emulator saw for one account and operation, by outcome."""
    by_op: dict[str, dict[str, int]] = admin.stats(app_key)["requests"]
    return by_op.get(operation, {})
