"""Orchestration: the Prefect flow over the stages, and the `rlhf` command line."""
