"""Nested data as plain YAML- and JSON-safe values.

>>> plain_data({"widths": (4, 8), "nested": {"pairs": ((25.0, 4),)}})
{'widths': [4, 8], 'nested': {'pairs': [[25.0, 4]]}}
"""

from __future__ import annotations

from typing import Any


def plain_data(value: Any) -> Any:
    """``value`` with every tuple turned into a list, through dicts and lists (what ``yaml.safe_dump`` takes)."""
    if isinstance(value, dict):
        return {key: plain_data(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain_data(item) for item in value]
    return value
