"""`python -m emoray.cli`: the `emoray` command."""

import sys

from emoray.cli import main

sys.exit(main())
