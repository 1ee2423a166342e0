"""The library the stages share: settings, I/O and readers, validation (Great Expectations),
human-feedback import (preferences), tracking, registry and lineage (MLflow), evaluation
statistics, judges and plots, the feedback loop's inbox and collection.

Nothing here imports a stage (rlhf.tasks), the orchestration (rlhf.flows) or the demo.
"""
