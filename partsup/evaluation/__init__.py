"""Evaluation: matching, counts, PR curves and protocols (:mod:`.matching`), calibration
(:mod:`.calibration`), overlays (:mod:`.overlay`)."""
