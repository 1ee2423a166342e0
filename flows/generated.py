"""The files generated from the code, never edited by hand: the demo's params.yaml (every key, the
demo's values), dvc.yaml (the stage table), and the reference pages of docs/.

`python -m rlhf.flows.generated` rewrites them all (`make generated`); a test fails when a
committed one differs from what this module makes of the code.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from rlhf.core.io import write_text
from rlhf.core.pipeline.params import params_yaml, settings_markdown
from rlhf.core.settings import load_settings
from rlhf.flows.dvc_yaml import render
from rlhf.flows.reference import reference_markdown

# path in the repository -> its content, made from the repository's own params.yaml
FILES: dict[str, Callable[[Path], str]] = {
    "params.yaml": lambda root: params_yaml(load_settings(root / "params.yaml")),
    "dvc.yaml": lambda root: render(load_settings(root / "params.yaml")),
    "docs/settings.md": lambda root: settings_markdown(),
    "docs/reference.md": lambda root: reference_markdown(),
}


def stale(root: Path) -> list[str]:
    """The generated files whose committed text is not what the code makes."""
    return [
        name
        for name, make in FILES.items()
        if not (root / name).is_file() or (root / name).read_text(encoding="utf-8") != make(root)
    ]


def write_all(root: Path) -> list[str]:
    """Rewrite the stale files; their names."""
    changed = stale(root)
    for name in changed:
        write_text(root / name, FILES[name](root))
    return changed


if __name__ == "__main__":
    root = Path.cwd()
    for name in write_all(root):
        print(f"rewrote {name}", file=sys.stderr)
