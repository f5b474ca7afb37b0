"""The languages residents may choose, in the one order every list shows them."""

from __future__ import annotations

LANGUAGES: tuple[str, ...] = ("ka", "az", "hy", "ru")
