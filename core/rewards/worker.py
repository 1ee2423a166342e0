"""The process reward functions run in: the stage's own process never runs them, so a function
that hangs is stopped by its timeout, one that crashes takes only this process down, and one
that runs untrusted code (a unit test) cannot reach the stage's state. Standard library only:
it starts in a fresh interpreter.

Protocol (a multiprocessing pipe): it sends ("ready",) once every function loaded, or
("error", name, None, cause); then for each batch (prompts, completions, fields) it sends, per
function in order, ("done", name, values) or ("error", name, index, cause) and stops the batch.
"""

from __future__ import annotations

import ctypes
import importlib
import math
import numbers
import signal
import sys

PR_SET_PDEATHSIG = 1  # Linux prctl: the signal this process gets when its parent dies


def serve(conn, functions: list[tuple[str, str, dict]], root: str) -> None:
    """Load functions [(name, "module:object", args)] and score batches until the pipe closes."""
    for signum in (signal.SIGINT, signal.SIGTERM):  # the stage stops it, not the terminal
        signal.signal(signum, signal.SIG_IGN)
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    sys.path.insert(0, root)  # the project's own modules
    loaded = []
    for name, spec, args in functions:
        module, _, attr = spec.partition(":")
        try:
            loaded.append((name, getattr(importlib.import_module(module), attr), args))
        except Exception as e:  # noqa: BLE001 (any error of the user's module is reported)
            conn.send(("error", name, None, f"cannot load {spec} ({type(e).__name__}: {e})"))
            return
    conn.send(("ready",))
    while True:
        try:
            prompts, completions, fields = conn.recv()
        except EOFError:
            return
        for name, fn, args in loaded:
            try:
                values = fn(prompts, completions, **fields, **args)
            except Exception as e:  # noqa: BLE001
                conn.send(("error", name, None, f"raised {type(e).__name__}: {e}"))
                break
            found = checked(values, len(completions))
            if isinstance(found, tuple):
                conn.send(("error", name, *found))
                break
            conn.send(("done", name, found))


def checked(values, n: int) -> list[float] | tuple[int | None, str]:
    """values as floats (None: NaN), or (the sample index or None, what is wrong)."""
    try:
        values = list(values)
    except TypeError:
        return None, f"returned {type(values).__name__}, not a list of {n} values"
    if len(values) != n:
        return None, f"returned {len(values)} values for {n} completions"
    out = []
    for i, v in enumerate(values):
        if v is None:
            out.append(math.nan)
        elif not isinstance(v, numbers.Real):
            return i, f"returned {type(v).__name__} {str(v)[:40]!r}, not a number or None"
        elif not math.isfinite(v):
            return i, f"returned {v}"
        else:
            out.append(float(v))
    return out
