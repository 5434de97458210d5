"""The operator's dashboard in the browser (``signq dashboard``): server-rendered pages over the
same reads and operations as the command line, live parts in a few lines of plain JavaScript."""

from __future__ import annotations

from worker.dashboard.app import build_app, serving

__all__ = ["build_app", "serving"]
