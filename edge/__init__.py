"""Raman Edge device side: preprocessing, int8 classification, deconvnet peaks, MQTT publishing.

Nothing in this package may import TensorFlow: the device install has none.
"""

__version__ = "0.1.0"
