"""Code named in params.yaml ("package.module:object"), loaded when a run needs it.

This is how the demo's gold judge and simulated annotators reach evaluation and the feedback
loop without production code importing the demo: params.yaml names them, real data leaves the
field empty.
"""

from __future__ import annotations

import importlib
from typing import Any

from rlhf.core.settings import Settings, UserError


def load_plugin(settings: Settings, field: str) -> Any | None:
    """The object a settings field names, or None when the field is empty."""
    spec = settings.value_of(field)
    return load_object(spec, field) if spec else None


def load_object(spec: str, owner: str) -> Any:
    """The object "module:object" names; owner (what named it) is in the error."""
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise UserError(f"{owner}: cannot load {spec!r} ({e})") from None
