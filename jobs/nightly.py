"""Entry point for `ray job submit -- python jobs/nightly.py --config conf/cluster.yaml`."""

import sys

from emoray.cli import main

if __name__ == "__main__":
    sys.exit(main(["nightly", *sys.argv[1:]]))
