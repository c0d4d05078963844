"""``python -m pik_console.cli``: the same ``pik`` as the installed script."""

import sys

from pik_console.cli.main import main

sys.exit(main())
