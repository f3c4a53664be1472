"""The tools beside the product, each named after its command: the benchmarks (`emoray bench`
and its scenarios), the fault campaign and the flaky store it runs through, the local S3
endpoint, the tiny models, the demo, and the driver-killing wrapper of the crash tests. The
product never imports them (tests/test_imports.py); only the CLI dispatches to them."""
