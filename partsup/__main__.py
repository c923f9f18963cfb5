"""``python -m partsup`` (also what ``torchrun -m partsup`` runs)."""
from partsup.cli import console_main

console_main()
