"""Concentric weak labels and the concentric loss (SegMitos), plus other point-label types."""
