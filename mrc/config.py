"""Dataclass configs <-> argparse flags, printing and saving the resolved config.

Every component owns a dataclass whose fields carry a one-line doc in `metadata["help"]`
and are validated in `__post_init__`. CLIs build their flags from those fields, so a flag
can never drift from the config it fills.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def field(default: Any = dataclasses.MISSING, help: str = "", *, default_factory: Any = dataclasses.MISSING,
          flags: tuple[str, ...] = (), nargs: str | None = None, choices: tuple | None = None,
          positional: bool = False) -> Any:
    """A dataclass field with its CLI documentation attached (positional: a bare CLI argument, no --flag)."""
    meta = {"help": help, "flags": flags, "nargs": nargs, "choices": choices, "positional": positional}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _base_type(tp: Any) -> tuple[Any, bool]:
    """Strip Optional[...] / list[...]; return (element type, is_list)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0])
    if origin in (list, tuple):
        return typing.get_args(tp)[0], True
    return tp, False


def add_dataclass_args(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type) -> None:
    """Add one `--name` flag per field of `cls` (bools become on/off switches)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        meta = f.metadata
        tp, is_list = _base_type(hints[f.name])
        names = [f"--{f.name}", *meta.get("flags", ())]
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        help_text = meta.get("help", "")
        if meta.get("positional"):
            parser.add_argument(f.name, type=tp, help=help_text, **({"nargs": meta["nargs"]} if meta.get("nargs") else {}))
            continue
        if tp is bool and not is_list:
            parser.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=default, help=help_text)
            continue
        kwargs: dict[str, Any] = {"dest": f.name, "type": tp, "default": default, "required": required,
                                  "help": f"{help_text} (default: {default})" if not required else help_text}
        if is_list or meta.get("nargs"):
            kwargs["nargs"] = meta.get("nargs") or "+"
        if meta.get("choices"):
            kwargs["choices"] = meta["choices"]
        parser.add_argument(*names, **kwargs)


def from_args(cls: type[T], args: argparse.Namespace) -> T:
    """Build `cls` from the parsed flags that belong to it (validation runs in __post_init__)."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    return cls(**{k: v for k, v in vars(args).items() if k in names})


def parse_config(cls: type[T], argv: list[str] | None, *, description: str, prog: str | None = None) -> T:
    """The one way a CLI turns its command line into its config: flags from the fields of `cls`."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_dataclass_args(parser, cls)
    return from_args(cls, parser.parse_args(argv))


def to_dict(cfg: Any) -> dict[str, Any]:
    """JSON-ready dict of a config (paths become strings)."""
    def clean(v: Any) -> Any:
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return v
    return {f.name: clean(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def save_config(cfg: Any, path: Path) -> None:
    """Write a config as indented JSON, atomically."""
    from mrc.io import atomic_write_text

    atomic_write_text(Path(path), json.dumps(to_dict(cfg), indent=2, ensure_ascii=False) + "\n")


def print_config(cfg: Any, title: str | None = None) -> None:
    """Print the resolved config as a two-column rich table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title or type(cfg).__name__, show_header=False, title_justify="left")
    table.add_column("field", style="cyan")
    table.add_column("value")
    for k, v in to_dict(cfg).items():
        table.add_row(k, json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v)
    Console(stderr=True).print(table)
