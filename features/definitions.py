"""The shop's features, defined once for Feast: two entities and the two feature views that
training (point-in-time joins over the lake's feature logs) and serving (Redis) both read.

The feature logs are the profile events the consumer writes under the lake (data.root), one
immutable parquet file per batch: `features/user_profile/*.parquet` (user events) and
`features/product_catalog/*.parquet` (product events), each with the entity id, the feature
columns and `event_timestamp` (tz-aware UTC). The lake's root is configuration, so the views are
built by `definitions(lake_root)`, never at import time.
"""

from __future__ import annotations

from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Array, Float64, Int64, String

from contract.columns import CATEGORIES
from contract.events import PRODUCT_CATALOG_FEATURES, USER_PROFILE_FEATURES

TIMESTAMP = "event_timestamp"
# Relative to data.root: one directory of parquet batch files per view.
OFFLINE_DIRS: dict[str, str] = {
    "user_profile": "features/user_profile",
    "product_catalog": "features/product_catalog",
    "catalog_index": "features/catalog_index",  # INDEX_VIEW
}
USER_FEATURES: tuple[str, ...] = USER_PROFILE_FEATURES
PRODUCT_FEATURES: tuple[str, ...] = PRODUCT_CATALOG_FEATURES
# The retrieval index: one entity, the shop's catalog, whose one feature is the list of every
# product id the catalog has announced. The online store is read by key only, so retrieval
# learns from here which products exist; their features it reads from product_catalog.
INDEX_VIEW = "catalog_index"
INDEX_KEY, INDEX_ID = "catalog", "shop"
# Each view's entity join key.
JOIN_KEYS: dict[str, str] = {"user_profile": "user_id", "product_catalog": "product_id"}
VIEW_FEATURES: dict[str, tuple[str, ...]] = {
    "user_profile": USER_FEATURES,
    "product_catalog": PRODUCT_FEATURES,
}

# ttl bounds how old a feature event a point-in-time join may use (older: null). It must never
# bite on the shop's own traffic, because Feast's Redis reads do not apply it (the online store
# keeps the newest value however old): a ttl that dropped values offline would be a skew.
# - users: a `user` event opens every visit, so an impression's profile is minutes old; 30 days
#   covers a returning user's profile from the previous visit (days_since_last_visit is rarely
#   above 30) without joining profiles from a season ago.
# - products: the catalog is snapshotted at the start of every day and re-published on each
#   price or sale change, so a product's event is under a day old; 7 days tolerates a few missed
#   snapshots while a product gone from the catalog for a week stops being served history.
USER_TTL = timedelta(days=30)
PRODUCT_TTL = timedelta(days=7)

_AFFINITY_DESCRIPTION = (
    "the user's affinity for {category} (0-1, a share of the user's interest; the affinities of "
    "a user sum to about 1), from the user's profile event at the start of each visit, 4 decimals"
)
_USER_DESCRIPTIONS: dict[str, str] = {
    "user_avg_price": "the average price the user paid, from the user's profile event (the "
    "CRM's aggregate) published at the start of each visit, 2 decimals",
    "days_since_last_visit": "whole days between this visit and the user's previous one, from "
    "the user's profile event at the start of each visit",
    **{
        f"affinity_{category}": _AFFINITY_DESCRIPTION.format(category=category)
        for category in CATEGORIES
    },
}
_PRODUCT_DESCRIPTIONS: dict[str, str] = {
    "category": "the product's category (contract.CATEGORIES), from the catalog event",
    "brand": "the product's brand (contract.BRANDS), from the catalog event",
    "price": "the current price (the sale price while on sale), from the catalog event "
    "published at the day's snapshot and whenever price or sale change, 2 decimals",
    "on_sale": "1 while the product is on sale, else 0, from the catalog event",
    "rating": "the average customer rating (1-5), from the catalog event, 1 decimal",
    "popularity": "the product's popularity weight from the catalog event; served for "
    "retrieval (issue 21), not a model column",
}


def definitions(lake_root: str) -> list:
    """The entities and feature views over the feature logs under `lake_root` (data.root)."""
    root = lake_root.rstrip("/")
    user = Entity(
        name="user",
        join_keys=["user_id"],
        value_type=ValueType.STRING,
        description="a shop customer (contract: user_id)",
    )
    product = Entity(
        name="product",
        join_keys=["product_id"],
        value_type=ValueType.STRING,
        description="a catalog product (contract: product_id)",
    )
    user_profile = FeatureView(
        name="user_profile",
        entities=[user],
        ttl=USER_TTL,
        schema=[
            Field(name="user_id", dtype=String),
            *(
                Field(
                    name=name,
                    dtype=Int64 if name == "days_since_last_visit" else Float64,
                    description=_USER_DESCRIPTIONS[name],
                )
                for name in USER_FEATURES
            ),
        ],
        source=_source("user_profile", root, "the shop's `user` events (a profile per visit)"),
        online=True,
        description="the user's CRM profile as of the start of the current visit: one `user` "
        "event per visit, the newest event at or before a time is the user's features then",
    )
    product_types = {"category": String, "brand": String, "on_sale": Int64}
    product_catalog = FeatureView(
        name="product_catalog",
        entities=[product],
        ttl=PRODUCT_TTL,
        schema=[
            Field(name="product_id", dtype=String),
            *(
                Field(
                    name=name,
                    dtype=product_types.get(name, Float64),
                    description=_PRODUCT_DESCRIPTIONS[name],
                )
                for name in PRODUCT_FEATURES
            ),
        ],
        source=_source(
            "product_catalog", root, "the shop's `product` events (daily snapshot + changes)"
        ),
        online=True,
        description="the product's catalog entry: a `product` event at each day's snapshot and "
        "whenever price or sale change; the newest event at or before a time is the product then",
    )
    catalog = Entity(
        name="catalog",
        join_keys=[INDEX_KEY],
        value_type=ValueType.STRING,
        description=f"the shop's catalog as a whole (one entity, {INDEX_ID!r})",
    )
    catalog_index = FeatureView(
        name=INDEX_VIEW,
        entities=[catalog],
        ttl=PRODUCT_TTL,
        schema=[
            Field(name=INDEX_KEY, dtype=String),
            Field(
                name="product_ids",
                dtype=Array(String),
                description="every product id of the catalog's events, most popular first; "
                "written by `shop-features materialize` from the product_catalog log",
            ),
        ],
        source=_source(INDEX_VIEW, root, "the index `shop-features materialize` writes"),
        online=True,
        description="the retrieval index: which products exist (serving/retrieval.py)",
    )
    return [user, product, user_profile, product_catalog, catalog, catalog_index]


def _source(view: str, root: str, description: str) -> FileSource:
    return FileSource(
        name=f"{view}_log",
        path=f"{root}/{OFFLINE_DIRS[view]}",
        timestamp_field=TIMESTAMP,
        description=description,
    )
