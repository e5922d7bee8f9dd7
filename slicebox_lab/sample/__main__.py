"""``python -m slicebox_lab.sample``: write the sample data to a folder, a running node or this machine's node."""

import sys

from . import main

sys.exit(main())
