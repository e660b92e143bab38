"""Feature names and kinds shared by preprocessing_fn, the model and the serving signatures."""

from __future__ import annotations

import contract

LABEL = contract.LABEL
EXAMPLE_ID = contract.EXAMPLE_ID

# High-cardinality ids: hashed, no vocabulary to compute or ship.
HASHED = ("user_id", "product_id")
# Closed vocabularies: tft.compute_and_apply_vocabulary (+1 out-of-vocabulary bucket).
VOCABULARY = ("category", "brand", "device", "referrer", "country")
# Small integer ranges used as categorical ids directly.
INTEGER_IDS = {"hour": 24, "on_sale": 2}
# Numerics: z-scored, after log1p where the distribution is skewed.
LOG_NUMERIC = ("price", "user_avg_price", "days_since_last_visit")
NUMERIC = ("rating", "user_category_affinity", "position")
# Crosses: pairs hashed together; device x hour carries the "mobile in the evening" effect.
CROSSES = (("device", "hour"), ("referrer", "device"))

RAW_FEATURES = HASHED + VOCABULARY + tuple(INTEGER_IDS) + LOG_NUMERIC + NUMERIC


def xf(name: str) -> str:
    """Name of a transformed feature."""
    return f"{name}_xf"


def cross_name(pair: tuple[str, str]) -> str:
    return f"{pair[0]}_x_{pair[1]}"


PRICE_BUCKET = "price_bucket"
PRICE_RATIO = "price_vs_usual"

CATEGORICAL_OUTPUTS = (
    tuple(xf(n) for n in HASHED)
    + tuple(xf(n) for n in VOCABULARY)
    + tuple(xf(n) for n in INTEGER_IDS)
    + (xf(PRICE_BUCKET),)
    + tuple(xf(cross_name(p)) for p in CROSSES)
)
NUMERIC_OUTPUTS = tuple(xf(n) for n in LOG_NUMERIC + NUMERIC) + (xf(PRICE_RATIO),)
