"""The data contract, the bottom layer: what the shop's export holds and how files are laid out.

`contract.columns` names the columns, the label and the vocabularies; `contract/schema.pbtxt` is
the curated schema built from them (`make schema`, contract/schema_tool.py). Everything above
(settings, components, pipelines, serving, monitoring) and the simulator beside them import from
here; this package imports nothing of the repo's.
"""

from pathlib import Path

from contract.columns import (
    BRANDS,
    BRANDS_PER_CATEGORY,
    CATEGORIES,
    COLUMNS,
    COUNTRIES,
    DEVICES,
    EXAMPLE_ID,
    HOURS,
    LABEL,
    NOT_MODEL_INPUTS,
    POSITIONS,
    RATING,
    REFERRERS,
    REQUEST_ID,
)

# The curated schema, shipped as package data: ImportSchemaGen reads it by `package://` URI.
SCHEMA_PATH = Path(__file__).resolve().parent / "schema.pbtxt"

__all__ = [
    "BRANDS",
    "BRANDS_PER_CATEGORY",
    "CATEGORIES",
    "COLUMNS",
    "COUNTRIES",
    "DEVICES",
    "EXAMPLE_ID",
    "HOURS",
    "LABEL",
    "NOT_MODEL_INPUTS",
    "POSITIONS",
    "RATING",
    "REFERRERS",
    "REQUEST_ID",
    "SCHEMA_PATH",
]
