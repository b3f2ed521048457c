"""Benchmarks and the soak.  The benchmark scripts run as plain scripts
(``python bench/bench.py``, importing their siblings by name); the soak runs
as a package module (``python -m bench.soak``), hence this file.
"""
