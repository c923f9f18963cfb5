"""Training: the loop and its parts (:mod:`.loop`), checkpoints (:mod:`.checkpoint`), optimisers
(:mod:`.optim`)."""
