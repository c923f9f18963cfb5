"""Data: image reading and the reader base (:mod:`.readers`), the ``folder`` dataset
(:mod:`.folder`), training patches, sampling and augmentation (:mod:`.sampling`)."""
