"""Inference: detection parameters (:mod:`.params`), tiled probability maps (:mod:`.tiling`),
fusion, blobs and filtering (:mod:`.blobs`), candidate filters (:mod:`.filters`) and the
Detector (:mod:`.detector`)."""
