"""(in progress)"""
from __future__ import annotations

DATASETS: dict = {}
