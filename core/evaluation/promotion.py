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


def decide(
    e: Evaluation, rules: Promotion, kl_budget: float, version: str, champion: str | None
) -> Decision:
    """Whether the evaluated policy `version` should take `champion` from `champion`.

    e: the evaluation, with the win rates against the champion when there is one, and the
    human win rate when people decide. The decider is the judge `rules.judge` names; with a
    champion, its interval's lower bound must clear `rules.min_win_rate_lower`, and a
    promotion another judge disagrees with is held. With no champion yet, the first policy
    takes it unless the judge shows it worse than the reference. Beyond the KL budget nothing
    is promoted.
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
    kl_ok = kl is not None and kl <= kl_budget
    shown = "n/a" if kl is None else f"{kl:.2f}"
    kl_reason = f"KL to the reference {shown} {'<=' if kl_ok else '>'} the budget {kl_budget:g}"
    rm = e.win("rm", other)
    rm_reason = (
        f"the optimised reward model's win rate {rm.rate:.3f} ({rm.lower:.3f}-{rm.upper:.3f}), "
        "not a judge"
        if rm
        else "the optimised reward model did not judge"
    )
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
            [f"{JUDGES[decider]} scored none of the samples", rm_reason, kl_reason],
            decider,
        )
    between = f"{seen.rate:.3f} (95% interval {seen.lower:.3f}-{seen.upper:.3f})"
    if champion is None:
        worse = seen.upper < 0.5
        win_reason = (
            f"{JUDGES[decider]}: win rate against {incumbent} {between}, "
            f"{'worse than' if worse else 'not worse than'} it"
        )
        verdict = "first" if kl_ok and not worse else "rejected"
        return Decision(verdict, [win_reason, rm_reason, kl_reason], decider)
    beats = seen.lower > rules.min_win_rate_lower
    win_reason = (
        f"{JUDGES[decider]}: win rate against {incumbent} {between}, lower bound "
        f"{'>' if beats else '<='} {rules.min_win_rate_lower:g}"
    )
    if not (beats and kl_ok):
        return Decision("rejected", [win_reason, rm_reason, kl_reason], decider)
    dissent = dissenters(e, decider, other)
    if dissent:
        return Decision("held", [win_reason, *dissent, rm_reason, kl_reason], decider)
    return Decision("promoted", [win_reason, rm_reason, kl_reason], decider)
