"""`python -m modelfleet`: the command line."""

import sys

from modelfleet.cli import main

sys.exit(main())
