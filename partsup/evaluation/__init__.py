"""Evaluation: matching, counts and PR curves (:mod:`.matching`), protocols (:mod:`.protocols`),
calibration (:mod:`.calibration`), overlays (:mod:`.overlay`)."""
