"""Config tables laid over built-in entries, so a table names only the fields it changes."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel


def overlay_builtins(tables: object, builtins: Mapping[str, BaseModel], model: type[BaseModel]) -> object:
    """Merge each ``[section.NAME]`` table over the built-in entry of the same name, field by field.

    Runs before validation, so the merged table is validated as a whole entry; anything that is not
    a dict is returned as it is, for pydantic to report.
    """
    if not isinstance(tables, dict):
        return tables
    merged: dict[object, object] = {}
    for name, table in tables.items():
        base = builtins.get(name) if isinstance(name, str) else None
        if isinstance(table, model):
            table = table.model_dump(exclude_unset=True)
        merged[name] = base.model_dump() | table if base is not None and isinstance(table, dict) else table
    return merged
