"""The command line: ``main(argv) -> int`` (:mod:`.main`) and thin commands (:mod:`.commands`)."""
from partsup.cli.main import console_main, main

__all__ = ["console_main", "main"]
