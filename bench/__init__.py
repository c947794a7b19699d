"""Benchmarks (each prints its figures next to a baseline measured in the same run), the behaviour
fingerprint of bench/identity.py and the code-map generator.

Which module does what, and who calls it: docs/map.md.
"""
