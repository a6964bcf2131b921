"""The exceptions dermsweep raises for bad input: each message says what was wrong and how to fix it."""


class DermsweepError(Exception):
    """Base class: an error the user can fix (bad config, bad data, unreachable service)."""


class ConfigError(DermsweepError):
    """A configuration value is unknown or impossible. The message names the key."""


class DataError(DermsweepError):
    """The dataset is missing, laid out unexpectedly, or has unusable files."""


class TrackingError(DermsweepError):
    """The MLflow tracking store cannot be reached or written."""


class TrainingDiverged(DermsweepError):
    """The loss became NaN or infinite."""
