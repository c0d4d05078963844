"""The Textual console (``pik console``): see :mod:`pik_console.console.app`."""
