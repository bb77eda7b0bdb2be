"""How ``detcli COMMAND --help`` names the values it asks for.

typer shows a value by its Python type (``--set <list[str]>``, ``--epochs <int range>``) and puts braces around
a required argument (``{source}``). Every detcli command uses :class:`HelpCommand` instead: each value is
named by its metavar (``--set FIELD=VALUE``, ``SOURCE``), given explicitly where a word says more than the
type, else derived from the type here (``N`` for a whole number, ``PATH`` for a path, …).
"""
from __future__ import annotations

from typing import Any

from typer.core import TyperCommand

METAVAR_BY_TYPE = {"int": "N", "float": "FLOAT", "path": "PATH", "str": "TEXT",  # typer's type names,
                   "integer": "N", "integer range": "N", "float range": "FLOAT", "text": "TEXT"}  # click's


class HelpCommand(TyperCommand):
    """A typer command whose help shows metavars only: in the usage line (``SOURCE``, ``[NAME]``), in the
    Arguments section and after every option that takes a value."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if param.metavar is None and not getattr(param, "is_flag", False):
                param.metavar = (param.name.upper() if param.param_type_name == "argument"
                                 else METAVAR_BY_TYPE.get(_type_name(param), "VALUE"))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                pieces.append(param.metavar if param.required else f"[{param.metavar}]")
        return pieces

    def format_options(self, ctx: Any, formatter: Any) -> None:
        arguments, options = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                arguments.append((param.metavar, record[1]))  # typer's record adds the type: "SOURCE <str>"
            else:
                options.append(record)
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


def _type_name(param: Any) -> str:
    """The value type's name: typer's own (``int``, ``path``, … in typer ≥ 0.20), else click's (``integer``)."""
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is not None:
        return "path" if descriptor.is_path else param.bare_type()
    return getattr(param.type, "name", "")


__all__ = ["HelpCommand", "METAVAR_BY_TYPE"]
