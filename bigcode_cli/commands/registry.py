"""The list of commands in the order `bigcode --help` shows them."""

from __future__ import annotations

COMMANDS: list = []
