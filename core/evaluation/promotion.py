"""Who decides a promotion, and how: the rules of `promotion` in params.yaml applied to an
evaluation. The reward model the policy optimised may hold a promotion back, never make one."""

from __future__ import annotations

from rlhf.core.evaluation.records import CHAMPION, JUDGE, NEW, REFERENCE, Evaluation
from rlhf.core.settings import Promotion
from rlhf.core.tracking.registry import Decision

# The judges a verdict names, by their metric prefix; `gold` is never one of them (the demo's
# referee), and the optimised reward model (`rm`) may hold a promotion back, never make one.
JUDGES = {
    "judge": "the evaluation reward models",
    "human": "people, side by side",
    "rm": "the optimised reward model",
}


# nats per token of a response that its own prompt adds, on average, below which a reference does
# not depend on its prompts enough for a fall in the policy's to mean anything
READS_PROMPTS = 0.05


def decider_label(e: Evaluation, decider: str) -> str:
    """The deciding judge, for people: without a reward model the reward functions judge."""
    return "the reward functions" if decider == JUDGE and e.functions_judge else JUDGES[decider]


def judge_label(prefix: str) -> str:
    if prefix in JUDGES:
        return JUDGES[prefix]
    return f"evaluation reward model {prefix.removeprefix('judge_')}"  # a member: judge_<i>


def dissenters(e: Evaluation, decider: str, other: str) -> list[str]:
    """The other judges (the optimised RM, the evaluation RMs together and one by one) whose
    win rate says the incumbent is better."""
    found = []
    for judge in ("rm", JUDGE, *e.members(other)):
        seen = e.win(judge, other) if judge != decider else None
        if seen is not None and seen.rate < 0.5:
            found.append(f"{judge_label(judge)} disagree(s): win rate {seen.rate:.3f}")
    return found


def kl_limit(e: Evaluation, rules: Promotion, kl_budget: float) -> tuple[float, str]:
    """The KL a promotion may reach, and its name: judge.kl_budget, or the held-out curve's
    budget where that is smaller."""
    curve = e.kl_budget_curve if rules.kl_budget_drop is not None else None
    if curve is not None and curve < kl_budget:
        return curve, f"the held-out curve's budget {curve:.2f} (judge.kl_budget {kl_budget:g})"
    shown = "" if curve is None else f" (the held-out curve's: {curve:.2f})"
    return kl_budget, f"the budget {kl_budget:g}{shown}"


def relevance_signal(new: float, ref: float, floor: float | None) -> tuple[bool, str]:
    """The new policy's prompt relevance against the reference's, where it started. A reference
    that barely reads its prompts (a tiny or untrained model) makes the ratio noise: reported,
    not checked."""
    line = f"prompt relevance {new:.3f} nats per token against the reference's {ref:.3f}"
    if ref < READS_PROMPTS:
        return False, f"{line} (the reference's below {READS_PROMPTS:g}: not checked)"
    ratio = new / ref
    over = floor is not None and ratio < floor
    reason = f", below {floor:g}x: responses that would do for any prompt please the judges"
    return over, f"{line} ({ratio:.2f}x)" + (reason if over else "")


def signals(e: Evaluation, rules: Promotion, other: str) -> list[tuple[bool, str]]:
    """Each over-optimisation signal of the new policy against `other`: (whether it holds the
    promotion back, its line in the decision)."""
    new, old, ref = e.scores[NEW], e.scores.get(other), e.scores.get(REFERENCE)
    found: list[tuple[bool, str]] = []
    limit = rules.max_extrapolated
    if new.extrapolated is not None and e.validated is not None:
        base = ref.extrapolated if ref is not None and ref.extrapolated is not None else 0.0
        over = limit is not None and new.extrapolated - base > limit
        found.append(
            (
                over,
                f"{new.extrapolated:.1%} of its responses lie outside the range the judges were "
                f"validated on ({e.validated.responses} test responses; the reference's "
                f"{base:.1%})"
                + (
                    f": more than {limit:g} beyond the reference's, the judges are "
                    "extrapolating; people must decide (promotion.judge: human)"
                    if over
                    else ""
                ),
            )
        )
    rm, judge = e.win("rm", other), e.win(JUDGE, other)
    if rm is not None and judge is not None and not e.functions_judge:  # else they are one
        gap = rm.rate - judge.rate
        over = rules.max_rm_judge_gap is not None and gap > rules.max_rm_judge_gap
        found.append(
            (
                over,
                f"the optimised reward model's win rate exceeds the judge's by {gap:+.3f}"
                + (f", more than {rules.max_rm_judge_gap:g}" if over else ""),
            )
        )
    if old is not None and new.length and old.length:
        ratio = new.length / old.length
        over = rules.max_length_ratio is not None and max(ratio, 1 / ratio) > rules.max_length_ratio
        found.append(
            (
                over,
                f"mean length {new.length:.1f} tokens against {old.length:.1f} ({ratio:.2f}x)"
                + (f", beyond {rules.max_length_ratio:g}x either way" if over else ""),
            )
        )
    # undefined without bigrams (one-word answers): the length signal sees a collapse then
    if old is not None and old.distinct_2 and new.distinct_2 is not None:
        ratio = new.distinct_2 / old.distinct_2
        over = rules.min_distinct_ratio is not None and ratio < rules.min_distinct_ratio
        found.append(
            (
                over,
                f"distinct-2 {new.distinct_2:.3f} against {old.distinct_2:.3f} ({ratio:.2f}x)"
                + (f", below {rules.min_distinct_ratio:g}x" if over else ""),
            )
        )
    if new.relevance is not None and ref is not None and ref.relevance is not None:
        found.append(relevance_signal(new.relevance, ref.relevance, rules.min_relevance_ratio))
    if new.kl is not None and new.length:
        found.append((False, f"KL per token {new.kl / new.length:.3f} nats"))
    if e.split.get(other) is not None:
        found.append((False, f"the judge's members disagree on {e.split[other]:.1%} of pairs"))
    return found


def decide(
    e: Evaluation, rules: Promotion, kl_budget: float, version: str, champion: str | None
) -> Decision:
    """Whether the evaluated policy `version` should take `champion` from `champion`.

    e: the evaluation, with the win rates against the champion when there is one, and the
    human win rate when people decide. The decider is the judge `rules.judge` names; with a
    champion, its interval's lower bound must clear `rules.min_win_rate_lower`, and a
    promotion another judge disagrees with is held. With no champion yet, the first policy
    takes it unless the judge shows it worse than the reference. Beyond the KL budget (the
    smaller of judge.kl_budget and the held-out curve's) nothing is promoted, and where the
    evaluation reward models decide, an over-optimisation signal past its limit holds it.
    """
    if champion == version:
        return Decision(
            "unchanged",
            [
                f"version {version} is the champion already "
                "(the same weights were registered before)"
            ],
        )
    decider = "human" if rules.judge == "human" else JUDGE
    other, incumbent = (
        (CHAMPION, f"champion v{champion}") if champion else (REFERENCE, "the reference")
    )
    kl = e.scores[NEW].kl
    budget, budget_name = kl_limit(e, rules, kl_budget)
    kl_ok = kl is not None and kl <= budget
    shown = "n/a" if kl is None else f"{kl:.2f}"
    kl_reason = f"KL to the reference {shown} {'<=' if kl_ok else '>'} {budget_name}"
    rm = e.win("rm", other)
    rm_reason = (
        "no reward model (rewards.model_weight 0)"
        if e.functions_judge
        else f"the optimised reward model's win rate {rm.rate:.3f} ({rm.lower:.3f}-"
        f"{rm.upper:.3f}), not a judge"
        if rm
        else "the optimised reward model did not judge"
    )
    label = decider_label(e, decider)
    seen = e.win(decider, other)
    if seen is None and decider == "human" and e.human is not None and e.human.tasks == 0:
        return Decision(
            "rejected",
            [
                f"the new policy's responses equal {incumbent}'s on every held-out sample: "
                "nothing for people to compare",
                rm_reason,
                kl_reason,
            ],
            decider,
        )
    if seen is None:
        if decider == "human":
            got = f"{e.human.labelled_tasks} of {e.human.tasks}" if e.human else "none"
            return Decision(
                "pending",
                [f"waiting for people's labels ({got} tasks labelled)", rm_reason, kl_reason],
                decider,
            )
        return Decision(
            "rejected",
            [f"{label} scored none of the samples", rm_reason, kl_reason],
            decider,
        )
    found = signals(e, rules, other)
    gating = decider == JUDGE  # people see the responses themselves
    held = [f"over-optimisation: {line}" for over, line in found if over and gating]
    notes = [f"over-optimisation signal: {line}" for over, line in found if not (over and gating)]
    between = f"{seen.rate:.3f} (95% interval {seen.lower:.3f}-{seen.upper:.3f})"
    if champion is None:
        worse = seen.upper < 0.5
        win_reason = (
            f"{label}: win rate against {incumbent} {between}, "
            f"{'worse than' if worse else 'not worse than'} it"
        )
        reasons = [win_reason, *held, rm_reason, kl_reason, *notes]
        if not kl_ok or worse:
            return Decision("rejected", reasons, decider)
        return Decision("held" if held else "first", reasons, decider)
    beats = seen.lower > rules.min_win_rate_lower
    win_reason = (
        f"{label}: win rate against {incumbent} {between}, lower bound "
        f"{'>' if beats else '<='} {rules.min_win_rate_lower:g}"
    )
    if not (beats and kl_ok):
        return Decision("rejected", [win_reason, rm_reason, kl_reason, *held, *notes], decider)
    dissent = dissenters(e, decider, other)
    if held or dissent:
        return Decision(
            "held", [win_reason, *held, *dissent, rm_reason, kl_reason, *notes], decider
        )
    return Decision("promoted", [win_reason, rm_reason, kl_reason, *notes], decider)
