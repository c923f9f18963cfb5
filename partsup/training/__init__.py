"""Training: :func:`.loop.fit` and its parts, one module each: stages (:mod:`.stages`), the
batch stream (:mod:`.stream`), the run's objects (:mod:`.run`), one step (:mod:`.step`),
validation (:mod:`.validate`), the run folder (:mod:`.rundir`), resuming (:mod:`.resume`),
progress and curves (:mod:`.display`), signals (:mod:`.signals`) and optimisers
(:mod:`.optim`). Checkpoint files are :mod:`partsup.checkpoint`'s."""
