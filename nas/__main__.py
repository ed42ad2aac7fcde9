"""``python -m nas`` runs the ``hwnas`` command line."""

import sys

from nas.cli import main

sys.exit(main())
