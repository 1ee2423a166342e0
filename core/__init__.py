"""The library the stages share, in rooms that import only the rooms before them:

  settings.py   the settings schema (every params.yaml key), the policy method table
  io.py         digests, atomic writes, JSON
  data/         reading input files, validating them with Great Expectations, SFT record formats
  tracking/     MLflow: the store, runs, registration, the registry's aliases, lineage
  pipeline/     what a stage is, what it receives, its code dependencies, locks, provenance
  feedback/     human feedback: export formats, the versioned dataset, the loop's inbox,
                collection and Label Studio
  evaluation/   judges, sampling and scoring, statistics, reports, plots, the method scoreboard,
                the human gate
  rewards/      reward functions beside the reward model: the built-ins, the worker process
                they run in
  policy/       the loop every online policy method trains in, and the snapshot choice every
                method ends with

Nothing here imports a stage (rlhf.tasks), the orchestration (rlhf.flows) or the demo; a test
(tests/test_package.py) checks every arrow.
"""
