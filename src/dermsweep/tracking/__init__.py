"""MLflow: the store, the run format every run follows, and what a run records."""
