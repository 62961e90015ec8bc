"""Benchmark harness: finopsd against a bare aiohttp relay (the floor), in one run. See bench/README.md."""
