"""Settings files are bounded: a params file built to expand, nest or grow without end, or one
that is not a file, is one line at once, never a hang while it is read or its error shown."""

import os
import time

import pytest

from rlhf.core.settings import YAML_MAX_BYTES, YAML_MAX_DEPTH, YAML_MAX_NODES
from rlhf.flows.cli import main
from tests.support.faults import assert_one_line_error


def laughs(levels: int, under: str = "") -> str:
    """Aliases of aliases: 9**levels values once expanded, from a few hundred bytes."""
    lines = [f"{under}a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"{under}a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


CASES = {  # content -> what the one line says
    "aliases at the top": (laughs(12), f"more than {YAML_MAX_NODES} values"),
    "aliases in a section": ("ppo:\n" + laughs(12, "  "), f"more than {YAML_MAX_NODES} values"),
    "nesting": ("a: " + "[" * 5000 + "]" * 5000 + "\n", f"deeper than {YAML_MAX_DEPTH} levels"),
    "nesting of mappings": (
        "".join("  " * i + f"k{i}:\n" for i in range(200)) + "  " * 200 + "v\n",
        f"deeper than {YAML_MAX_DEPTH} levels",
    ),
    "size": ("# " + "x" * YAML_MAX_BYTES + "\n", f"larger than {YAML_MAX_BYTES} bytes"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_params_file_built_to_blow_up_is_one_line_at_once(tmp_path, capsys, case):
    content, says = CASES[case]
    params = tmp_path / "params.yaml"
    params.write_text(content)

    started = time.perf_counter()
    rc = main(["--params", str(params), "dvc-yaml"])

    assert time.perf_counter() - started < 10  # bounded work; a hang would take minutes
    assert says in assert_one_line_error(rc, capsys.readouterr().err, str(params))


def test_a_bad_value_that_expands_within_the_bounds_is_shown_by_its_start(tmp_path, capsys):
    anchors = ["a: &a0 [x, x, x, x, x, x, x, x, x]"]
    anchors += [f"b{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 4)]
    params = tmp_path / "params.yaml"
    params.write_text("ppo:\n  kl_coef: {" + ", ".join(anchors) + "}\n")  # 9**4 values

    rc = main(["--params", str(params), "dvc-yaml"])

    line = assert_one_line_error(rc, capsys.readouterr().err, "ppo.kl_coef")
    assert len(line) < 400


@pytest.mark.parametrize("kind", ["fifo", "device", "folder"])
def test_a_params_path_that_is_not_a_file_is_one_line_unread(tmp_path, capsys, kind):
    params = tmp_path / "params.yaml"
    if kind == "fifo":
        os.mkfifo(params)  # reading it would block for ever
    elif kind == "device":
        params.symlink_to("/dev/zero")  # reading it would never end
    else:
        params.mkdir()

    rc = main(["--params", str(params), "dvc-yaml"])

    assert_one_line_error(rc, capsys.readouterr().err, str(params))
