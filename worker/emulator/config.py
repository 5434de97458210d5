"""The emulator's start-up options."""

from __future__ import annotations

from dataclasses import dataclass, field

from worker.emulator.world import AuditRules
from worker.jsms.models import DEFAULT_MAX_IMAGE_BYTES


@dataclass(frozen=True)
class EmulatorConfig:
    """Start-up options of the emulator."""

    rules: AuditRules = field(default_factory=AuditRules)
    fault_seed: int = 0
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    callback_time_scale: float = 1 / 600
    tick_seconds: float = 0.02
    admin_token: str | None = None
