"""Evaluation: matching, counts and PR curves (:mod:`.matching`), protocols (:mod:`.protocols`),
scoring a dataset (:mod:`.scoring`), calibration (:mod:`.calibration`), overlays
(:mod:`.overlay`), classification metrics (:mod:`.classification`) and the second look's joint
calibration and per-head reports (:mod:`.second_look`)."""
