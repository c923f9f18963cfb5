"""``python -m partsup`` (also what ``torchrun -m partsup`` runs)."""
from partsup.cli.main import console_main

console_main()
