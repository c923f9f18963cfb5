"""Data: image files (:mod:`.images`), the reader base (:mod:`.readers`), the ``folder`` dataset
(:mod:`.folder`), opening a dataset by name (:mod:`.datasets`), the patch plan (:mod:`.sampling`),
augmentation (:mod:`.augment`) and the training Dataset (:mod:`.patches`)."""
