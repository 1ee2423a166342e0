"""The settings schema written out: a commented params.yaml, and the settings reference page.

Both come from rlhf.core.settings and nothing else: `rlhf params --defaults` prints every key
with its default and meaning, `rlhf params --write` rewrites a project's params.yaml as every key
with the project's values (a value that differs from its default shows the default beside it),
and docs/settings.md is settings_markdown(). A test checks the committed files against them.
"""

from __future__ import annotations

import textwrap
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types as at
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

from rlhf.core.settings import BEST_OF_N, METHODS, Settings, model_class, section_names

WIDTH = 100
HEADER = """\
# The settings of this project. Every key is checked (rlhf.core.settings): an unknown key, a wrong
# type or a value out of bounds is an error naming the key. Written by `rlhf params --write`: each
# key's meaning and [bounds] above it; beside a value that is not the default, the default. A
# params.yaml may name only what it changes (docs/settings.md lists every key).
"""


@dataclass(frozen=True)
class Key:
    """One setting as the schema declares it."""

    path: str  # "ppo.kl_coef"
    field: FieldInfo

    @property
    def name(self) -> str:
        return self.path.rpartition(".")[2]

    @property
    def section(self) -> type[BaseModel] | None:
        """The class of the section this key holds, if it holds one."""
        return model_class(self.field.annotation)

    @property
    def meaning(self) -> str:
        return " ".join((self.field.description or "").split())

    @property
    def default(self) -> Any:
        return self.field.get_default(call_default_factory=True)

    @property
    def note(self) -> str:
        """Meaning and bounds, as the comment above the key."""
        limits = bounds(self.field)
        return f"{self.meaning} [{limits}]" if limits else self.meaning


def sections() -> Iterator[tuple[str, type[BaseModel] | None]]:
    """Each top-level key of params.yaml with its section class (None: a plain value)."""
    fields = Settings.model_fields
    for name in section_names():
        found = model_class(fields[name].annotation) if name in fields else None
        yield name, found or _method_section(name)


def _method_section(name: str) -> type[BaseModel] | None:
    return next((m.config for m in METHODS.values() if m.section == name), None)


def keys(model: type[BaseModel], prefix: str) -> Iterator[Key]:
    """Every key of a section, depth first, in the order it declares them (the keys of an
    optional section, null by default, too)."""
    for name, field in model.model_fields.items():
        key = Key(prefix + name, field)
        yield key
        if key.section is not None and not field.is_required():
            yield from keys(key.section, f"{key.path}.")


def doc(model: type[BaseModel]) -> str:
    return " ".join((model.__doc__ or "").split())


def type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:  # its choices are its bounds
        return type(get_args(annotation)[0]).__name__
    if origin in (Union, types.UnionType):
        return " \\| ".join(
            "null" if a is type(None) else type_name(a) for a in get_args(annotation)
        )
    if origin is not None:
        return f"{origin.__name__}[{', '.join(type_name(a) for a in get_args(annotation))}]"
    if model_class(annotation) is not None:
        return "section"
    return getattr(annotation, "__name__", str(annotation))


BOUNDS = (
    (at.Gt, "> {}", "gt"),
    (at.Ge, ">= {}", "ge"),
    (at.Lt, "< {}", "lt"),
    (at.Le, "<= {}", "le"),
)


def bounds(field: FieldInfo) -> str:
    """A field's bounds as people read them: "> 0", ">= 0, <= 1", "2 items", "module:object"."""
    found = []
    for item in field.metadata:
        found += [
            form.format(getattr(item, attr))
            for kind, form, attr in BOUNDS
            if isinstance(item, kind)
        ]
        low, high = getattr(item, "min_length", None), getattr(item, "max_length", None)
        if low is not None and low == high:
            found.append(f"{low} items")
        elif low:
            found.append(f"at least {low}")
        if getattr(item, "pattern", None):
            found.append('"module:object"' if ":" in item.pattern else f"matches {item.pattern}")
    choices = get_args(field.annotation) if get_origin(field.annotation) is Literal else ()
    if isinstance(field.json_schema_extra, dict):
        choices = tuple(field.json_schema_extra.get("choices", choices))  # type: ignore[arg-type]
    if choices:
        found.append(" | ".join(str(c) for c in choices))
    return ", ".join(found)


def value(x: Any) -> str:
    """x as YAML writes it on one line (flow style for lists and mappings)."""
    text = yaml.safe_dump(plain(x), default_flow_style=True, width=float("inf"), sort_keys=False)
    return text.removesuffix("...\n").strip()


def plain(x: Any) -> Any:
    """x with its sections (also inside lists and mappings) as plain mappings."""
    return to_jsonable_python(x)


def comment(text: str, indent: str) -> list[str]:
    prefix = f"{indent}# "
    return textwrap.wrap(text, WIDTH, initial_indent=prefix, subsequent_indent=prefix)


def key_lines(key: Key, given: Any, indent: str) -> list[str]:
    """A key's comment and its line; beside a value that is not the default, the default."""
    line = f"{indent}{key.name}: {value(given)}"
    if not key.field.is_required() and plain(given) != plain(key.default):
        line += f"  # default: {value(key.default)}"
    return [*comment(key.note, indent), line]


def section_lines(model: type[BaseModel], given: BaseModel, indent: str) -> list[str]:
    lines = []
    for name, field in model.model_fields.items():
        key, current = Key(name, field), getattr(given, name)
        if isinstance(current, BaseModel):  # a nested section that is set
            lines += [*comment(key.meaning, indent), f"{indent}{name}:"]
            lines += section_lines(type(current), current, indent + "  ")
        else:
            lines += key_lines(key, current, indent)
    return lines


def params_yaml(settings: Settings | None = None) -> str:
    """params.yaml with every key: settings' values (without settings, the defaults), each
    key's meaning and bounds above it, and the default beside a value that is not the default."""
    settings = settings or Settings()
    lines = [HEADER]
    for name, model in sections():
        current = getattr(settings, name)
        if model is not None:
            lines += ["", *comment(doc(model), ""), f"{name}:"]
            lines += section_lines(model, current, "  ")
        else:
            lines += key_lines(Key(name, Settings.model_fields[name]), current, "")
    return "\n".join(lines) + "\n"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def row(key: Key) -> str:
    default = "required" if key.field.is_required() else f"`{value(key.default)}`"
    return (
        f"| `{key.path}` | {type_name(key.field.annotation)} | {default} | "
        f"{cell(bounds(key.field))} | {cell(key.meaning)} |"
    )


TABLE = ["| key | type | default | bounds | meaning |", "|---|---|---|---|---|"]


def settings_markdown() -> str:
    """docs/settings.md: the policy methods, then every key with its type, default, bounds and
    meaning, one table per section."""
    lines = [
        "# Settings",
        "",
        "Every key of `params.yaml`, generated from the schema (`rlhf.core.settings`);",
        "`rlhf params --defaults` prints the same as a commented `params.yaml`. A project's",
        "`params.yaml` names only what it changes: every other key takes its default. An unknown",
        "key, a wrong type, a value out of bounds, NaN or infinity is a one-line error naming the",
        "key (and, for an unknown one, the nearest known key).",
        "",
        "## Policy methods",
        "",
        "`policy.method` picks the one the pipeline trains; `compare.methods` lists those",
        f"`rlhf compare` trains side by side (and `{BEST_OF_N}`, which trains nothing). Each",
        "method reads its own section, and its cache key covers that section only.",
        "",
        "| method | section | kind | what it is |",
        "|---|---|---|---|",
        *(
            f"| `{m.name}` | [`{m.section}`](#{m.section}) | "
            f"{'online' if m.online else 'offline'} | {m.summary} |"
            for m in METHODS.values()
        ),
        "",
        "## Top level",
        "",
        *TABLE,
        *(row(Key(n, Settings.model_fields[n])) for n, model in sections() if model is None),
    ]
    for name, model in sections():
        if model is not None:
            lines += ["", f"## {name}", "", doc(model), "", *TABLE]
            lines += [row(key) for key in keys(model, f"{name}.")]
    return "\n".join(lines) + "\n"
