"""The plugin's only imports of dermsweep: the trial link (storage, job environment) and the MLflow parent run.

They are due to move into ``dermsweep.sweep``; when they do, this file is the one to change.
"""
from dermsweep import parent_run  # noqa: F401
from dermsweep import trial as trial_link  # noqa: F401

__all__ = ["parent_run", "trial_link"]
