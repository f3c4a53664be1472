"""Entry point for `ray job submit -- python jobs/evaluate.py --config conf/cluster.yaml`."""

import sys

from emoray.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
