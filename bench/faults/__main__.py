"""``python -m bench.faults``: run the fault campaign (see ``run.py``)."""

from __future__ import annotations

from .run import main

raise SystemExit(main())
