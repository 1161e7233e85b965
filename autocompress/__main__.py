"""``python -m autocompress`` runs the command-line interface."""

import sys

from autocompress.cli import main

sys.exit(main())
