"""The model: branch contract and two-branch PartialModel (:mod:`.partial`), weight transfer Gamma
(:mod:`.transfer`), pixel losses (:mod:`.losses`)."""
