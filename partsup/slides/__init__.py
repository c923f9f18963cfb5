"""Whole-slide images: a tile-by-tile reader for multi-level (pyramid) TIFFs (SVS, NDPI, generic),
tissue masks, the slide prediction loop and generic density maps / best windows."""
