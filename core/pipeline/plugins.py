"""Code named in params.yaml ("package.module:object"), loaded when a run needs it.

This is how the demo's gold judge and simulated annotators reach evaluation and the feedback
loop without production code importing the demo: params.yaml names them, real data leaves the
field empty.
"""

from __future__ import annotations

import importlib
from typing import Any

from rlhf.core.settings import Settings, UserError


def plugin_spec(settings: Settings, field: str) -> str | None:
    """The "module:object" a settings field ("section.name") holds, or None."""
    section, _, name = field.partition(".")
    return getattr(getattr(settings, section), name)


def plugin_module(settings: Settings, field: str) -> str | None:
    spec = plugin_spec(settings, field)
    return spec.partition(":")[0] if spec else None


def load_plugin(settings: Settings, field: str) -> Any | None:
    """The object a settings field names, or None when the field is empty."""
    spec = plugin_spec(settings, field)
    if not spec:
        return None
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise UserError(f"{field}: cannot load {spec!r} ({e})") from None
