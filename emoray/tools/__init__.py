"""The tools beside the product, each named after its command: benchmarks, the fault campaign
and its flaky store, local S3, tiny models, the demo, the crash tests' driver killer, the code
map. The product never imports them (tests/test_imports.py); only the CLI dispatches to them."""
