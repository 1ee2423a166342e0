"""Reward functions beside the reward model: rules and checkable answers, named in params.yaml
(`rewards.functions`) as "module:function", weighted into the reward the online methods
optimise and reported by the evaluation beside the judge.

The built-ins below need no code; a project's own function takes the same arguments
(rlhf.core.rewards.functions says how they are called and checked).
"""

from rlhf.core.rewards.builtins import exact_match, length_band, numeric_match, regex, repetition

__all__ = ["exact_match", "length_band", "numeric_match", "regex", "repetition"]
