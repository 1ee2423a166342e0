import math

from rlhf.demo.gold import gold_score, judge

PROMPT = "Write a positive review of the kettle that mentions the lid."


def test_gold_judge_rewards_each_constraint():
    perfect = gold_score(PROMPT, "The kettle is great and the lid is lovely.")
    assert perfect == 1.0
    assert gold_score(PROMPT, "The kettle is awful and the lid is poor.") < perfect
    assert gold_score(PROMPT, "The chair is great and the lid is lovely.") < perfect
    assert gold_score(PROMPT, "The kettle is great and the box is lovely.") < perfect


def test_gold_judge_punishes_degenerate_output():
    assert gold_score(PROMPT, "") == 0.0
    assert gold_score(PROMPT, "great great great kettle lid") == 0.0
    assert gold_score(PROMPT, "kettle lid") == 0.0


def test_judge_scores_demo_prompts_and_abstains_elsewhere():
    scores = judge(
        [PROMPT, "Summarise this article."], ["The kettle is great and the lid is lovely.", "ok"]
    )
    assert scores[0] == 1.0 and math.isnan(scores[1])
