"""What ``/logs`` shows: row shaping (``items``), HTML pages (``pages``, ``detail``), templates and static files.

Nothing here queries: the rows come from ``finopsd.log.store`` through the route.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

WEB_DIR: Final = Path(__file__).parent
STATIC_DIR: Final = WEB_DIR / "static"
TEMPLATES_DIR: Final = WEB_DIR / "templates"
