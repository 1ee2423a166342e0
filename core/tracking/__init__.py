"""MLflow: the store and its runs, model registration, the registry's aliases, lineage."""
