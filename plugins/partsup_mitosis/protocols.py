"""(in progress)"""
from __future__ import annotations

PROTOCOLS: dict = {}
