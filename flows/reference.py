"""docs/reference.md, made from the code: the stage table, the registered models, the promotion
verdicts, the evaluation's metric names and the commands (a test checks the committed page)."""

from __future__ import annotations

import argparse
import dataclasses

from rlhf.core.evaluation.records import (
    CHAMPION,
    FACTS,
    NEW,
    REFERENCE,
    HumanLabels,
    Interval,
    score_names,
    win_metrics,
)
from rlhf.core.pipeline.context import METRICS, RECORD, SUMMARY
from rlhf.core.settings import METHODS
from rlhf.core.tracking.registry import PROMOTING, VERDICTS
from rlhf.flows.cli import build_parser
from rlhf.tasks import STAGES

HEADER = """# Reference

Made from the code by `python -m rlhf.flows.generated` (`make generated`); a test fails when
this page and the code differ. The settings have [their own page](settings.md).
"""


def code(items) -> str:
    return ", ".join(f"`{i}`" for i in items) or "-"


def stages() -> list[str]:
    lines = [
        "## Stages",
        "",
        "In the order they run. Each reads only what it declares and writes exactly its outs "
        f"into `artifacts/<stage>/`, beside `{METRICS}` and `{RECORD}` (the runner checks "
        f"both) and `{SUMMARY}`, its headline metrics (DVC's metrics file). The policy stage "
        "also reads what its method declares.",
        "",
        "| stage | reads | settings | writes | registers | headline metrics |",
        "|---|---|---|---|---|---|",
    ]
    for s in STAGES:
        reads = code(s.needs)
        reads += "".join(f", the path `{field}` names" for field in s.named)
        reads += "".join(f", the code `{field}` names" for field in s.plugins)
        reads += "".join(f", `{n}` where `{f}` holds `{v}`" for n, f, v in s.needs_when)
        sections = code(s.params) + (", the method's section" if s.by_method else "")
        model = f"`<prefix>-{s.registers}`" if s.registers else "-"
        lines.append(
            f"| `{s.name}` | {reads} | {sections} | {code(s.outs)} | {model} | {code(s.headline)} |"
        )
    methods = [
        f"`{m.name}`: {code(m.needs + m.params)}"
        + "".join(f", the code `{field}` names" for field in m.plugins)
        for m in METHODS.values()
    ]
    lines += ["", "What each policy method reads besides: " + "; ".join(methods) + "."]
    return lines


def models() -> list[str]:
    lines = [
        "## Registered models",
        "",
        "Each under `mlflow.registry_prefix` (`rlhf` by default); `rlhf models` lists them.",
        "",
        "| name | registered by | serves |",
        "|---|---|---|",
    ]
    lines += [
        f"| `<prefix>-{s.registers}` | the `{s.name}` stage | {s.model_task} |"
        for s in STAGES
        if s.registers
    ]
    return lines


def verdicts() -> list[str]:
    lines = [
        "## Promotion verdicts",
        "",
        "What the promote step records on a policy version (its tag `promotion.verdict`); "
        f"{code(PROMOTING)} move the `champion` alias.",
        "",
        "| verdict | meaning |",
        "|---|---|",
    ]
    return lines + [f"| `{v}` | {meaning} |" for v, meaning in VERDICTS.items()]


def metrics() -> list[str]:
    """The evaluation's names, for a policy <p> (sft, policy, champion), a judge <j> and an
    incumbent <o> (sft, champion)."""
    policy, judge, other = "<p>", "<j>", "<o>"
    wins = win_metrics(judge, other, Interval(0.0, 0.0, 0.0))
    human = [f"human_{f.name}" for f in dataclasses.fields(HumanLabels)]
    return [
        "## Evaluation metrics",
        "",
        f"What `artifacts/evaluate/{METRICS}`, the evaluate run in MLflow and "
        "`artifacts/promote/decision.json` hold, for a policy `<p>` "
        f"({code((REFERENCE, NEW, CHAMPION))}), a judge `<j>` (`rm`: the optimised reward "
        "model, `judge`: the evaluation reward models together, `judge_<i>`: member i, "
        "`gold`: the reference judge, `human`: people) and an incumbent `<o>` "
        f"({code((REFERENCE, CHAMPION))}). A win rate is null where its judge did not score "
        "every sample, and has no interval then.",
        "",
        f"- each policy's: {code(score_names(policy).values())}",
        f"- the new policy's win rates: {code(wins)}",
        f"- the run's: {code(FACTS)}",
        f"- the human gate's: {code(human)}",
    ]


def commands() -> list[str]:
    lines = [
        "## Commands",
        "",
        "`rlhf [--params PATH] COMMAND`; `--help` on each for its options.",
        "",
    ]
    lines += ["| command | what it does |", "|---|---|"]
    for name, parser in subcommands(build_parser()):
        lines.append(f"| `rlhf {name}` | {' '.join((parser.description or '').split())} |")
    return lines


def subcommands(parser: argparse.ArgumentParser, prefix: str = ""):
    """(name, parser) of every command, nested ones (`feedback import`) by their full name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                full = f"{prefix}{name}"
                sub.description = sub.description or helps.get(name)
                nested = list(subcommands(sub, f"{full} "))
                yield from nested or [(full, sub)]


def reference_markdown() -> str:
    parts = [[HEADER.rstrip("\n")], stages(), models(), verdicts(), metrics(), commands()]
    return "\n\n".join("\n".join(p) for p in parts) + "\n"
