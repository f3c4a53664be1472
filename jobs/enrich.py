"""Entry point for `spark-submit jobs/enrich.py --config conf/enrich.yaml` (or plain python)."""

import sys

from emoray.cli import main

if __name__ == "__main__":
    sys.exit(main(["enrich", *sys.argv[1:]]))
