"""CLI subcommands: each module defines ``COMMAND``, a class following :class:`partsup.cli.main.Command`."""
