"""Faults of the machine for the fault-injection suite (tests/faults): the state of a tree, a
small or read-only file system, and the invariant each fault is checked against.

A small file system is a real tmpfs of a set size, mounted in a user and mount namespace
(`unshare`), so no privilege is needed and nothing outside the test sees it; where the platform
has no namespaces the tests that need one skip with the reason, and the seam tests inject the
same faults into the writer instead.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def tree(folder: Path) -> dict[str, str]:
    """Every entry under folder, hidden ones included, with its kind and content digest: two
    equal trees are byte-identical."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = path.relative_to(folder).as_posix()
            if path.is_symlink():
                state[rel] = f"link:{os.readlink(path)}"
            elif path.is_dir():
                state[rel] = "dir"
            else:
                state[rel] = hashlib.md5(path.read_bytes()).hexdigest()
    return state


def assert_one_line_error(rc: int, stderr: str, *names: str) -> str:
    """The invariant's error half: exit code 2 and one line naming each of names."""
    lines = stderr.strip().splitlines()
    assert rc == 2, stderr
    assert len(lines) == 1 and lines[0].startswith("rlhf: error: "), stderr
    assert "Traceback" not in stderr
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


@functools.cache
def namespaces() -> str | None:
    """None when a user and mount namespace can mount a tmpfs here, else why not."""
    if shutil.which("unshare") is None:
        return "no unshare command"
    probe = "mount -t tmpfs -o size=64k none /mnt 2>/dev/null || mount -t tmpfs none /tmp"
    out = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", probe],
        capture_output=True,
        text=True,
    )
    return None if out.returncode == 0 else f"no mount namespace: {out.stderr.strip()[:100]}"


def run_in_namespace(setup: list[str], command: list[str], watched: Path) -> dict:
    """Run shell setup lines (mounts) and then command in a fresh user and mount namespace;
    the state of watched before and after command (mounts vanish with the namespace, so it is
    read inside), command's exit code and its stderr."""
    snapshot = f"{shlex.quote(sys.executable)} -m tests.support.faults {shlex.quote(str(watched))}"
    script = "\n".join(
        [
            "set -e",
            *setup,
            f'{snapshot} > "$STATE/before"',
            "set +e",
            f'{shlex.join(command)} 2> "$STATE/stderr"; echo $? > "$STATE/rc"',
            f'{snapshot} > "$STATE/after"',
        ]
    )
    state = watched.parent / ".fault-state"
    state.mkdir(exist_ok=True)
    env = {**os.environ, "STATE": str(state), "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "bash", "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    result = {
        "rc": int((state / "rc").read_text()),
        "stderr": (state / "stderr").read_text(),
        "before": json.loads((state / "before").read_text()),
        "after": json.loads((state / "after").read_text()),
    }
    shutil.rmtree(state)
    return result


def small_fs(folder: Path, size: str, leave_free: int | None = None) -> list[str]:
    """Setup lines: a tmpfs of size mounted over folder (which must exist), holding a copy of
    its content; with leave_free, a file fills it up to that many free bytes. The folder itself
    is only hidden, never changed."""
    q, copy = shlex.quote(str(folder)), shlex.quote(str(folder.with_name(folder.name + ".copy")))
    lines = [
        f"cp -a {q} {copy}",
        f"mount -t tmpfs -o size={size} none {q}",
        f"cp -a {copy}/. {q}/",
        f"rm -rf {copy}",
    ]
    if leave_free is not None:
        filler = shlex.quote(str(folder / ".filler"))
        lines.append(
            f"free=$(df --output=avail -B1 {q} | tail -1); "
            f"head -c $((free - {leave_free})) /dev/zero > {filler}"
        )
    return lines


def read_only(folder: Path) -> list[str]:
    """Setup lines: folder mounted read-only (as root too: EROFS, not a permission check)."""
    q = shlex.quote(str(folder))
    return [f"mount --bind {q} {q}", f"mount -o remount,bind,ro {q}"]


if __name__ == "__main__":  # the snapshot run_in_namespace takes inside the namespace
    print(json.dumps({k: v for k, v in tree(Path(sys.argv[1])).items() if k != ".filler"}))
