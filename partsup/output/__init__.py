"""Output: detection writers (:mod:`.writers`) and output folders that never lose a user's files
(:mod:`.outdir`)."""
