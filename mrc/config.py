"""Dataclass configs <-> argparse flags, printing and saving the resolved config.

Every component owns a dataclass whose fields carry a one-line doc in `metadata["help"]` and are
validated in `__post_init__`. A CLI config composes them: a field whose type is itself a config
dataclass (`window: WindowConfig`) contributes that config's flags under their own names, so
`--max_seq_length` is declared once, in `WindowConfig`, for every CLI that cuts windows. Saved
configs (`training_args.json`) are flat, one key per flag, as the seed's were.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Iterator, TypeVar

from rich.console import Console
from rich.table import Table

from mrc.errors import MRCError
from mrc.io import atomic_write_text

T = TypeVar("T")


def field(default: Any = dataclasses.MISSING, help: str = "", *, default_factory: Any = dataclasses.MISSING,
          flags: tuple[str, ...] = (), nargs: str | None = None, choices: tuple | None = None,
          positional: bool = False) -> Any:
    """A dataclass field with its CLI documentation attached (positional: a bare CLI argument, no --flag)."""
    meta = {"help": help, "flags": flags, "nargs": nargs, "choices": choices, "positional": positional}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def section(cls: type) -> Any:
    """A field holding a whole component config (its flags join the CLI's under their own names)."""
    return dataclasses.field(default_factory=cls, metadata={"section": True})


def _base_type(tp: Any) -> tuple[Any, bool]:
    """Strip Optional[...] / list[...]; return (element type, is_list)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    if origin in (list, tuple):
        return typing.get_args(tp)[0], True
    return tp, False


def path_arg(text: str) -> Path:
    """argparse type of every Path flag: an empty string would silently mean the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty path; give a file or folder path")
    return Path(text)


def _is_section(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("section"))


def _section_type(cls: type, f: dataclasses.Field) -> type:
    return typing.get_type_hints(cls)[f.name]


def flag_fields(cls: type) -> Iterator[tuple[type, dataclasses.Field]]:
    """(owning class, field) of every flag of `cls`, sections expanded in place."""
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if _is_section(f):
            yield from flag_fields(_section_type(cls, f))
        else:
            yield cls, f


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def add_dataclass_args(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, *,
                       suppress_defaults: bool = False) -> None:
    """Add one `--name` flag per field of `cls` and of its sections (bools become on/off switches).

    With `suppress_defaults` nothing is required and a flag the command line does not name is
    absent from the namespace (how `given_flags` tells a typed value from a default).
    """
    for owner, f in flag_fields(cls):
        meta = f.metadata
        tp, is_list = _base_type(typing.get_type_hints(owner)[f.name])
        tp = path_arg if tp is Path else tp
        names = [f"--{f.name}", *meta.get("flags", ())]
        default = argparse.SUPPRESS if suppress_defaults else _default(f)
        required = (f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
                    and not suppress_defaults)
        help_text = meta.get("help", "")
        if meta.get("positional"):
            nargs = "?" if suppress_defaults else meta.get("nargs")
            parser.add_argument(f.name, type=tp, help=help_text, **({"nargs": nargs, "default": default} if nargs else {}))
            continue
        if tp is bool and not is_list:
            parser.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=default, help=help_text)
            continue
        kwargs: dict[str, Any] = {"dest": f.name, "type": tp, "default": default, "required": required,
                                  "help": f"{help_text} (default: {_default(f)})" if not required else help_text}
        if is_list or meta.get("nargs"):
            kwargs["nargs"] = meta.get("nargs") or "+"
        if meta.get("choices"):
            kwargs["choices"] = meta["choices"]
        parser.add_argument(*names, **kwargs)


def from_flat(cls: type[T], values: dict[str, Any]) -> T:
    """Build `cls` (and its sections) from one flat name -> value mapping; absent names keep defaults.

    Validation runs in each __post_init__.
    """
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if _is_section(f):
            kwargs[f.name] = from_flat(_section_type(cls, f), values)
        elif f.name in values:
            kwargs[f.name] = values[f.name]
    return cls(**kwargs)


def from_args(cls: type[T], args: argparse.Namespace) -> T:
    """Build `cls` from the parsed flags that belong to it."""
    return from_flat(cls, vars(args))


def build_parser(cls: type, *, description: str, prog: str | None = None,
                 suppress_defaults: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_dataclass_args(parser, cls, suppress_defaults=suppress_defaults)
    return parser


def parse_config(cls: type[T], argv: list[str] | None, *, description: str, prog: str | None = None) -> T:
    """The one way a CLI turns its command line into its config: flags from the fields of `cls`."""
    return from_args(cls, build_parser(cls, description=description, prog=prog).parse_args(argv))


def given_flags(cls: type, argv: list[str] | None) -> frozenset[str]:
    """Names of the fields the command line sets explicitly (`argv` already parsed once by parse_config)."""
    namespace, _ = build_parser(cls, description="", suppress_defaults=True).parse_known_args(argv)
    return frozenset(vars(namespace))


def _clean(v: Any) -> Any:
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    return v


def to_dict(cfg: Any) -> dict[str, Any]:
    """JSON-ready flat dict of a config, sections expanded (paths become strings)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if _is_section(f):
            out.update(to_dict(value))
        else:
            out[f.name] = _clean(value)
    return out


def to_argv(cfg: Any, *, leave_out: frozenset[str] = frozenset()) -> list[str]:
    """The flags that rebuild `cfg`: every field whose value differs from its default (a reproducing command)."""
    argv: list[str] = []
    values = to_dict(cfg)
    for _, f in flag_fields(type(cfg)):
        value, default = values[f.name], _clean(_default(f))
        if f.name in leave_out or value == default:
            continue
        if isinstance(value, bool):
            argv.append(f"--{f.name}" if value else f"--no-{f.name}")
        elif f.metadata.get("positional"):
            argv.append(str(value))
        elif isinstance(value, list):
            argv += [f"--{f.name}", *map(str, value)]
        elif value is not None:
            argv += [f"--{f.name}", str(value)]
    return argv


def save_config(cfg: Any, path: Path) -> None:
    """Write a config as indented flat JSON, atomically."""
    atomic_write_text(Path(path), json.dumps(to_dict(cfg), indent=2, ensure_ascii=False) + "\n")


def print_config(cfg: Any, title: str | None = None, sources: dict[str, str] | None = None) -> None:
    """Print the resolved config as a rich table; with `sources`, a third column says where a value came from."""
    table = Table(title=title or type(cfg).__name__, show_header=False, title_justify="left")
    table.add_column("field", style="cyan")
    table.add_column("value")
    if sources:
        table.add_column("from", style="dim")
    for k, v in to_dict(cfg).items():
        row = [k, json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v]
        table.add_row(*row, *([sources.get(k, "")] if sources else []))
    Console(stderr=True).print(table)


def check_saved_type(name: str, annotation: Any, value: Any, saved_label: str) -> None:
    """A value read from a saved config (a file anyone can edit) must have its flag's type."""
    tp, is_list = _base_type(annotation)
    optional = type(None) in typing.get_args(annotation)
    if is_list or tp not in (bool, int, float, str) or (value is None and optional):
        return
    ok = (isinstance(value, bool) if tp is bool else
          isinstance(value, (int, float)) and not isinstance(value, bool) if tp is float else
          isinstance(value, tp) and not isinstance(value, bool))
    if not ok:
        raise MRCError(f"{saved_label}: {name} must be {tp.__name__}, got {type(value).__name__} "
                       f"{json.dumps(value, ensure_ascii=False)[:40]}; fix the file or pass --{name}")


def overlay_saved(cfg: T, section_names: tuple[str, ...], saved: dict[str, Any], given: frozenset[str],
                  saved_label: str) -> tuple[T, dict[str, str]]:
    """Replace the flags of `cfg`'s sections `section_names` by `saved` values, except flags in `given`.

    Returns the new config and, per flag of those sections, where its value came from: "flag",
    `saved_label` or "default". How predict.py takes window and decode settings from a model's
    training_args.json while a flag on the command line still wins.
    """
    sources: dict[str, str] = {}
    replaced: dict[str, Any] = {}
    for name in section_names:
        sub = getattr(cfg, name)
        values = {}
        hints = typing.get_type_hints(type(sub))
        for f in dataclasses.fields(sub):
            if f.name in given:
                sources[f.name] = "flag"
            elif f.name in saved:
                check_saved_type(f.name, hints[f.name], saved[f.name], saved_label)
                values[f.name] = saved[f.name]
                sources[f.name] = saved_label
            else:
                sources[f.name] = "default"
        replaced[name] = dataclasses.replace(sub, **values)
    return dataclasses.replace(cfg, **replaced), sources
