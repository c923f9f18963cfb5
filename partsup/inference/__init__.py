"""Inference: tiled maps, fusion, blobs and the Detector (:mod:`.detector`), candidate filters
(:mod:`.filters`)."""
