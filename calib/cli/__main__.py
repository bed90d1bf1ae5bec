"""`python -m calib.cli ...` is `detcal ...` (the examples run the CLI this way)."""
import sys

from . import main

sys.exit(main())
