"""The shop's export: column order, the label, the example id and the closed vocabularies.

The bottom of the import layers: the curated schema (contract/schema_tool.py), the features
(components/features.py), the monitor and the simulator all read these names; nothing here imports
the rest of the repo. A shop with its own export edits this file and the schema, not the pipeline.
"""

from __future__ import annotations

CATEGORIES: tuple[str, ...] = (
    "electronics",
    "books",
    "fashion",
    "home",
    "garden",
    "toys",
    "sports",
    "beauty",
    "grocery",
    "music",
    "pets",
    "automotive",
)
BRANDS_PER_CATEGORY = 5
BRANDS: tuple[str, ...] = tuple(
    f"{category}_brand_{i}" for category in CATEGORIES for i in range(BRANDS_PER_CATEGORY)
)
DEVICES: tuple[str, ...] = ("mobile", "desktop", "tablet")
REFERRERS: tuple[str, ...] = ("direct", "search", "email", "social", "ads")
COUNTRIES: tuple[str, ...] = ("US", "DE", "GB", "FR", "JP", "BR", "IN", "ES", "CA", "AU")

HOURS = (0, 23)
POSITIONS = (1, 20)
RATING = (1.0, 5.0)

LABEL = "purchased"
# One row per impression: the id the request log, the outcomes and the serving response share.
EXAMPLE_ID = "impression_id"
# The page (one recommendation request) an impression was shown on: the products shown together
# to one user in one context. The ranking metrics (NDCG@k) are computed per request, and the
# train/eval split keeps a request's impressions together.
REQUEST_ID = "request_id"
# Columns of the export that a scoring request does not carry (outcome and bookkeeping ids).
NOT_MODEL_INPUTS: tuple[str, ...] = (LABEL, EXAMPLE_ID, REQUEST_ID)
# Column order of the CSV the shop writes (the event log's export format).
COLUMNS: tuple[str, ...] = (
    "impression_id",
    "request_id",
    "user_id",
    "product_id",
    "category",
    "brand",
    "price",
    "on_sale",
    "rating",
    "user_avg_price",
    "user_category_affinity",
    "days_since_last_visit",
    "device",
    "hour",
    "referrer",
    "country",
    "position",
    LABEL,
)
