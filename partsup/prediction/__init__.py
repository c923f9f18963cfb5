"""The one prediction pipeline: ``partsup predict`` (the command parses, calls it and prints),
``Detector.predict_slide`` (the Python API) and torchrun all run it.

Modules: :mod:`~partsup.prediction.counts` (counts per image, per mm^2, pooled),
:mod:`~partsup.prediction.inputs` (files and folders into items, planned outputs, the output
folder check), :mod:`~partsup.prediction.result` (one input's result, failures, exit code),
:mod:`~partsup.prediction.image` (one image), :mod:`~partsup.prediction.slide` (one whole
slide, tile by tile), :mod:`~partsup.prediction.points` and :mod:`~partsup.prediction.given`
(``--at``: given points classified by the second look, on images and slides),
:mod:`~partsup.prediction.settings` (plugin defaults, margin, the model's
um/px: one place for the command and the API), :mod:`~partsup.prediction.summary` (summary
lines, ``summary.csv``) and :mod:`~partsup.prediction.pipeline` (a run over files, sharded
under torchrun; a slide from Python).

Units: image sizes in px, ``mpp`` in micrometres per pixel, areas in mm^2.
"""
from __future__ import annotations

from partsup.prediction.counts import (ImageCount, SetCount, area_mm2, count_classes,
                                       merge_classes, pool_counts)
from partsup.prediction.given import classify_slide, predict_slide_at
from partsup.prediction.image import detect_resampled, predict_one, read_input, write_overlay
from partsup.prediction.inputs import Item, check_output_folder, collect_inputs, planned_outputs
from partsup.prediction.points import look_classes, points_file, read_points, second_look_of
from partsup.prediction.result import DetectorLike, Result, exit_code, failure_message
from partsup.prediction.settings import PredictSettings, predict_defaults, predict_options
from partsup.prediction.slide import (SlideDetections, SlideOutput, detect_slide, predict_slide,
                                      write_slide)
from partsup.prediction.summary import class_line, count_lines, summary_lines, write_summary_csv

__all__ = ["DetectorLike", "ImageCount", "Item", "PredictSettings", "Result", "SetCount",
           "SlideDetections", "SlideOutput", "area_mm2", "check_output_folder", "class_line",
           "classify_slide", "collect_inputs", "count_classes", "count_lines",
           "detect_resampled", "detect_slide", "exit_code", "failure_message", "look_classes",
           "merge_classes", "planned_outputs", "points_file", "pool_counts", "predict_defaults",
           "predict_one", "predict_options", "predict_slide", "predict_slide_at", "read_input",
           "read_points", "second_look_of", "summary_lines", "write_overlay", "write_slide",
           "write_summary_csv"]
