"""Connectors: one module per tracker type, all behind ``base.Connector``; ``get_connector`` picks one."""

from __future__ import annotations

from instances.connectors.base import Connector, ConnectorError, ItemRef, get_connector, register

__all__ = ["Connector", "ConnectorError", "ItemRef", "get_connector", "register"]
