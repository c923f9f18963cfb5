"""(in progress)"""
from __future__ import annotations

OPTIMIZERS: dict = {}
