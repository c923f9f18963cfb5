"""(in progress)"""
from __future__ import annotations

WRITERS: dict = {}
