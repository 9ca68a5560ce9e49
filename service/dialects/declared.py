"""A dialect's fields, declared once: the parser reads them and `/openapi.json` describes them from the
same declaration, so the two cannot drift.

A `Field` pairs a reader from `service/fields.py` (or the dialect's own) with the JSON Schema of what that
reader takes (`service/field_schemas.py`), in the two flavours a sender can use: `form=True` for text from a
form body or a query string, `form=False` for a JSON value. tests/test_dialect_schemas.py generates values
from every served schema and feeds them to the parsers, and feeds what the parsers refuse to the schemas.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from service import field_schemas as schemas
from service import fields

SchemaFor = Callable[[bool], schemas.Schema]  # form -> the schema of what the reader takes


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a sender's payload: its name, its reader, the schema of what the reader takes."""

    name: str
    read: Callable[[Any], Any]
    schema: SchemaFor
    required: bool = False


def read_fields(
    data: dict[str, Any], specs: Iterable[Field], errors: fields.FieldErrors | None = None
) -> tuple[dict[str, Any], fields.FieldErrors]:
    """Each declared field read from `data` in declaration order (None when absent or bad), and the errors."""
    found = fields.FieldErrors() if errors is None else errors
    values: dict[str, Any] = {}
    for spec in specs:
        name = spec.name
        # Most fields are absent from most reports: None without a call (every reader reads None as absent).
        if spec.required or data.get(name) is not None:
            values[name] = found.read(data, name, spec.read, required=spec.required)
        else:
            values[name] = None
    return values, found


def properties(specs: Iterable[Field], form: bool) -> dict[str, schemas.Schema]:
    return {spec.name: spec.schema(form) for spec in specs}


def required(specs: Iterable[Field]) -> list[str]:
    return [spec.name for spec in specs if spec.required]


def describe(specs: Iterable[Field], form: bool) -> schemas.Schema:
    """The object the declared fields make: a form's other fields are ignored, as the readers ignore them."""
    specs = tuple(specs)
    return schemas.obj(required(specs), properties(specs, form), form)


def fixed(schema: schemas.Schema) -> SchemaFor:
    """A schema the same in a form and in JSON (a word, text that a JSON number cannot stand for)."""
    return lambda form: schema


# The shared readers, each with its schema.


def message_id(name: str) -> Field:
    return Field(name, fields.message_id, schemas.message_id, required=True)


def short(name: str, *, required: bool = False) -> Field:
    return Field(name, fields.short, schemas.short, required)


def text(name: str) -> Field:
    return Field(name, fields.text, lambda form: schemas.text(fields.MAX_TEXT, form))


def count(name: str) -> Field:
    return Field(name, fields.count, schemas.count)


def moment(name: str) -> Field:
    return Field(name, fields.timestamp, schemas.moment)
