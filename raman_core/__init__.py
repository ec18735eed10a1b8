"""Domain code that every Raman Edge package shares, and nothing else.

The neutral layer under `firmware_bridge`, `edge` and `trainer`: the RRUFF file format, the
Raman-shift/wavelength units, detector constants and reference band tables. It imports only
the standard library and NumPy, and none of the three packages (tests/test_layering.py).
"""
