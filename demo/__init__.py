"""The demo task: generated data whose quality a programmatic gold judge can score.

task: the prompts ("Write a <positive|negative> review of the <item> that mentions the
      <aspect>.") and responses of mixed quality
gold: the gold judge, which plugs into evaluation as the reference judge
      (`evaluate.reference_judge` in params.yaml)
annotators: simulated annotators, noisy Bradley-Terry choosers over the gold score
data: `rlhf data`, the demo's raw inputs, generated from a seed (the same bytes every time)

Production code never imports this package; params.yaml names what it plugs in.
"""
