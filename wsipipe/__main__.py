"""``python -m wsipipe`` runs the command line."""

import sys

from wsipipe.cli import main

sys.exit(main())
