"""CLI commands of the server side: install, smoke."""

from __future__ import annotations
