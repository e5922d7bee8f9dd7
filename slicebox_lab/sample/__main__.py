"""``python -m slicebox_lab.sample --into FOLDER | URL | node``: see :func:`slicebox_lab.sample.main`."""

import sys

from . import main

sys.exit(main())
