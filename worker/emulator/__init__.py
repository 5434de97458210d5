"""A faithful fake of the JSMS signature API, served over real HTTP."""

from __future__ import annotations

from worker.emulator.app import Emulator
from worker.emulator.config import EmulatorConfig
from worker.emulator.server import EmulatorAdmin, EmulatorServer
from worker.emulator.world import AuditRules

__all__ = ["AuditRules", "Emulator", "EmulatorAdmin", "EmulatorConfig", "EmulatorServer"]
