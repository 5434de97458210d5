"""`python -m worker` is the `signq` command."""

from __future__ import annotations

from worker.cli import main

raise SystemExit(main())
