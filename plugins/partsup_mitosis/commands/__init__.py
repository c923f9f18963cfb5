"""The mitosis plugin's CLI commands (``partsup synth``, ``partsup demo``), registered through
``partsup_register_commands`` like any third-party command."""
