"""Checkpoint I/O: what a trained model is on disk, read by inference, evaluation, export and
training alike.

- :mod:`.payload`: the layout of a checkpoint (format ``partsup-checkpoint/1``) and the part of
  it that describes the model (:func:`.payload.model_payload`).
- :mod:`.files`: writing (atomic) and reading (``weights_only``) checkpoint files, a run folder
  standing for its ``best.pt``, :func:`.files.load_model`, and replacing the calibrated
  detection parameters.
- :mod:`.safetensors_file`: the weights alone as a ``.safetensors`` file (tensors plus the
  recipe, normalisation and detection parameters as JSON metadata).
- :mod:`.digest`: the SHA-256 of a model file (:func:`.digest.file_sha256`, streamed and
  cached per process), which model made a result.
- :mod:`.second_look`: a detector checkpoint's ``second_look`` section (a crop classifier run
  after the blob step): :func:`.second_look.attach_second_look`, reading and building it.

The run state a checkpoint also holds (optimiser, scheduler, random generators, sampler) is
written and restored by :mod:`partsup.training.resume`: only training needs it.
"""
