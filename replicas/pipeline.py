"""The sync pipeline (placeholder until the pipeline lands)."""

from __future__ import annotations


def on_item_changed(*, instance_id: int, item_id: str, item_key: str, actor: str) -> None:
    return None
