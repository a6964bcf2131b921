"""Scoring a classifier: metrics, reports, confusion matrices, calibration and figures."""
