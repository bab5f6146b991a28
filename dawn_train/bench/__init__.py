"""Benchmarks behind `dawn-train bench ...`: they print figures, tests never time anything."""
