"""`python -m lab.cli`: aronet-lab without the installed script."""

import sys

from . import main

sys.exit(main())
