"""Stage logic: one module per stage (ingest, pretrain, sft, feedback, reward, ppo, evaluate),
each a `run(ctx) -> metrics` function, plus the shared helpers for settings, I/O, validation
(Great Expectations) and tracking (MLflow). `tasks.stages` is the table that ties them together.
"""
