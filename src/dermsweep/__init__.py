"""dermsweep: find, track and ship the best skin-lesion classifier."""

__version__ = "0.1.0"
