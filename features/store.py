"""The feature store: Feast with its registry under output_root, Redis online and the lake's
feature logs offline. Everything the consumer, the seal, the CLI, the skew check and serving do
with features goes through these functions (features venv only: Feast needs numpy >= 2).

Offline retrieval for training (`training_features`) is a point-in-time join over the views'
FileSources read with pyarrow, driven by the registry's definitions (source path, timestamp
field, ttl, features), with Feast's semantics: the newest event at or before the impression's
time, none older than the view's ttl. Feast 0.67's own file offline store (Dask) is kept as
`engine="feast"` (the skew check's second opinion), not the default, because it
- collapses entity rows that share a join key and timestamp across views, losing impressions
  (feast-dev/feast#6787, open; a page of products shown at one instant does that),
- drops an entity row outright when its entity has only later feature events (instead of
  nulls), so the result is not one row per input row,
- joins every entity row with its entity's whole history before filtering: memory and time grow
  with the lake's age (100k rows over 30 days of logs: 38 s, 5.4 GB; this join: seconds).
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Sequence
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from feast import FeatureStore, FeatureView, RepoConfig
from feast.infra.online_stores.redis import RedisOnlineStoreConfig
from feast.types import Array, Float64, Int64, String

import contract
from contract.columns import CATEGORIES
from features.definitions import (
    INDEX_ID,
    INDEX_KEY,
    INDEX_VIEW,
    JOIN_KEYS,
    OFFLINE_DIRS,
    PRODUCT_FEATURES,
    TIMESTAMP,
    USER_FEATURES,
    VIEW_FEATURES,
    definitions,
)
from settings import PipelineConfig

__all__ = [
    "FEATURE_COLUMNS",
    "JOIN_KEYS",
    "MODEL_FEATURES",
    "OFFLINE_DIRS",
    "PRODUCT_FEATURES",
    "PROJECT",
    "TIMESTAMP",
    "USER_FEATURES",
    "VIEW_FEATURES",
    "catalog_snapshot",
    "write_catalog_index",
    "category_affinity",
    "event_timestamps",
    "materialize",
    "online_features",
    "open_store",
    "repo_config",
    "training_features",
    "write_online",
]

PROJECT = "shop"
# Everything training_features / online_features add to the entity columns.
FEATURE_COLUMNS: tuple[str, ...] = (*USER_FEATURES, *PRODUCT_FEATURES, "user_category_affinity")
# The columns of a training row that come from the store, in the contract's order.
MODEL_FEATURES: tuple[str, ...] = tuple(c for c in contract.COLUMNS if c in FEATURE_COLUMNS)
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ARROW = {
    String: pa.string(),
    Float64: pa.float64(),
    Int64: pa.int64(),
    Array(String): pa.list_(pa.string()),
}


def repo_config(
    config: PipelineConfig, *, registry_path: str | None = None, redis_db: int = 0
) -> RepoConfig:
    """Feast's RepoConfig built in code (no feature_store.yaml): project `shop`, the registry under
    output_root, Redis at stream.redis (database `redis_db`), the file offline store."""
    registry = registry_path or config.feature_registry_path
    if "://" not in registry:
        registry = os.path.abspath(registry)
        os.makedirs(os.path.dirname(registry), exist_ok=True)
    return RepoConfig(
        project=PROJECT,
        provider="local",
        registry=registry,
        online_store=RedisOnlineStoreConfig(
            connection_string=f"{config.stream.redis},db={redis_db}"
        ),
        offline_store={"type": "file"},
        entity_key_serialization_version=3,
        repo_path=os.getcwd(),
    )


def lake_root(config: PipelineConfig) -> str:
    """data.root as the FileSources name it (absolute for a local path, as the registry keeps it)."""
    root = config.data.root
    return root if "://" in root else os.path.abspath(root)


def open_store(
    config: PipelineConfig, *, registry_path: str | None = None, redis_db: int = 0
) -> FeatureStore:
    """The feature store with features/definitions.py applied. Applies only when the registry's
    definitions differ (a first run, a changed definition, another data.root), so consumers that
    start together do not rewrite the registry file; apply itself takes ~10-70 ms."""
    store = FeatureStore(config=repo_config(config, registry_path=registry_path, redis_db=redis_db))
    wanted = definitions(lake_root(config))
    if not _applied(store, wanted):
        store.apply(wanted)
    return store


def _applied(store: FeatureStore, objects: list) -> bool:
    for obj in objects:
        try:
            if isinstance(obj, FeatureView):
                current = store.get_feature_view(obj.name)
            else:
                current = store.get_entity(obj.name)
        except Exception:  # not found, or no registry file yet
            return False
        if _spec(current) != _spec(obj):
            return False
    return True


def _spec(obj) -> bytes:
    """The definition without the registry's bookkeeping (the sources' creation times)."""
    spec = obj.to_proto().spec
    for source in ("batch_source", "stream_source"):
        if source in spec.DESCRIPTOR.fields_by_name and spec.HasField(source):
            getattr(spec, source).ClearField("meta")
    return spec.SerializeToString(deterministic=True)


def _view(store: FeatureStore, name: str) -> FeatureView:
    return store.get_feature_view(name, allow_registry_cache=True)


def _schema(view: FeatureView) -> pa.Schema:
    """The feature log's arrow schema from the view's definition: the key, features, timestamp."""
    fields = [pa.field(view.join_keys[0], pa.string())]
    fields += [pa.field(f.name, _ARROW[f.dtype]) for f in view.features]
    return pa.schema(
        fields + [pa.field(view.batch_source.timestamp_field, pa.timestamp("ns", "UTC"))]
    )


def event_timestamps(seconds) -> pd.Series:
    """Event times (epoch seconds, floats) as tz-aware UTC timestamps, rounded to the microsecond:
    the one conversion for feature events and impressions alike. A float near 1.8e9 s resolves
    ~0.24 us, and pd.to_datetime(unit="s") turns the same float into different nanoseconds in
    pandas 1.5 and 2.3 (…457024 vs …456955): an impression at exactly its feature update's time
    must not fall on either side of it by the version that converted it."""
    micros = np.round(np.asarray(seconds, dtype=float) * 1e6).astype("int64")
    index = getattr(seconds, "index", None)
    return pd.Series(pd.to_datetime(micros, unit="us", utc=True), index=index)


def _utc(values) -> pd.Series:
    """Timestamps as tz-aware UTC (naive ones are UTC, numbers are epoch seconds)."""
    series = pd.Series(values)
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return event_timestamps(series)
    return pd.to_datetime(series, utc=True)


def write_online(store: FeatureStore, view: str, frame: pd.DataFrame) -> None:
    """Writes feature events (the view's key, features and event_timestamp) to Redis. Feast keeps
    the newest per entity: a row whose event_timestamp is at or before the stored one is skipped
    (also within one frame), so redelivered or out-of-order batches never roll a value back."""
    if frame.empty:
        return
    definition = _view(store, view)
    columns = [definition.join_keys[0], *(f.name for f in definition.features), TIMESTAMP]
    missing = sorted(set(columns) - set(frame.columns))
    if missing:
        raise ValueError(f"write_online({view!r}): frame lacks column(s) {missing}")
    table = pa.Table.from_pandas(frame[columns].assign(**{TIMESTAMP: _utc(frame[TIMESTAMP])}))
    # One chunk: Feast converts only the first record batch of a table (utils._convert_arrow_fv_to_proto).
    table = table.select(columns).cast(_schema(definition)).combine_chunks()
    with _online_write_lock(store, view), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        store.write_to_online_store(view, table.to_pandas())


def _online_write_lock(store: FeatureStore, view: str):
    """A Redis lock around one view's online write. Feast's newest-wins check reads the stored
    timestamps, then writes: two consumers writing the same user at once could each pass the
    check and leave the older value (the two-consumer fault test saw 4 of 67 users stale)."""
    import redis

    address, _, options = store.config.online_store.connection_string.partition(",")
    host, _, port = address.rpartition(":")
    db = int(options.removeprefix("db=")) if options.startswith("db=") else 0
    client = redis.Redis(host=host, port=int(port), db=db)
    return client.lock(f"shop:online-write:{view}", timeout=60, blocking_timeout=120)


def materialize(
    store: FeatureStore, end: datetime, start: datetime | None = None
) -> dict[str, tuple[datetime, datetime]]:
    """Loads the feature logs' newest value per entity in [start, end] into Redis (newer stored
    values stay, so rerunning is harmless). start None: from the beginning of time, not from
    the registry's last materialization (Feast's materialize_incremental): the registry would
    say "done" for a Redis that restarted empty (the loopback one keeps nothing), and events
    that reached the lake late behind an earlier `end` would be skipped. A full run costs one
    read of the logs (Feast's Dask store reads them whole for any interval) and one write per
    entity. Views without any feature log yet are skipped. Then the retrieval index
    (write_catalog_index) is rewritten from the product log. Returns the interval per view."""
    end = _aware(end)
    done: dict[str, tuple[datetime, datetime]] = {}
    for name in VIEW_FEATURES:
        view = _view(store, name)
        if not _has_files(view.batch_source.path):
            continue
        begin = _aware(start) if start else EPOCH
        if begin > end:
            continue
        # Feast prints its progress to stdout: stderr keeps a caller's stdout (JSON) clean.
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")
            store.materialize(start_date=begin, end_date=end, feature_views=[name])
        done[name] = (begin, end)
    if "product_catalog" in done:
        write_catalog_index(store, end)
    return done


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _has_files(path: str) -> bool:
    if "://" in path:
        return True
    return os.path.isdir(path) and any(
        n.endswith(".parquet") and not n.startswith((".", "_")) for n in os.listdir(path)
    )


def read_feature_log(
    store: FeatureStore,
    view: str,
    *,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    keys: Sequence[str] | None = None,
) -> pd.DataFrame:
    """A view's feature events (key, features, event_timestamp) with start <= time <= end, sorted
    by time (stable: batch files in name order). Files whose names start with '.' or '_' (a
    writer's temporary files) are not read; an empty or missing log gives no rows."""
    definition = _view(store, view)
    schema = _schema(definition)
    path = definition.batch_source.path
    if not _has_files(path):
        return schema.empty_table().to_pandas()
    dataset = ds.dataset(path, format="parquet", schema=schema)
    ts = ds.field(definition.batch_source.timestamp_field)
    condition = None
    for part in (
        ts >= pa.scalar(start, pa.timestamp("ns", "UTC")) if start is not None else None,
        ts <= pa.scalar(end, pa.timestamp("ns", "UTC")) if end is not None else None,
        ds.field(definition.join_keys[0]).isin(list(keys)) if keys is not None else None,
    ):
        if part is not None:
            condition = part if condition is None else condition & part
    table = dataset.to_table(filter=condition)
    order = pc.sort_indices(table, [(TIMESTAMP, "ascending")])  # stable sort
    return table.take(order).to_pandas()


def training_features(
    store: FeatureStore,
    entity_df: pd.DataFrame,
    *,
    timestamps: bool = False,
    engine: str = "arrow",
) -> pd.DataFrame:
    """entity_df (impression_id, user_id, product_id, event_timestamp) joined point in time with
    both views, plus user_category_affinity: one row per input row, in the input's order. A
    feature is null when its entity has no event at or before the row's time within the view's
    ttl. timestamps=True adds `<view>__event_timestamp`, the time of the event each row used
    (always at or before the row's own time). engine="feast" asks Feast's offline store instead
    (see the module docstring; same values, slower, no timestamps)."""
    missing = sorted({"user_id", "product_id", TIMESTAMP} - set(entity_df.columns))
    if missing:
        raise ValueError(f"training_features: entity_df lacks column(s) {missing}")
    frame = entity_df.reset_index(drop=True).copy()
    frame[TIMESTAMP] = _utc(frame[TIMESTAMP])
    for view in VIEW_FEATURES:
        if engine == "arrow":
            joined = _as_of(store, view, frame[[JOIN_KEYS[view], TIMESTAMP]], timestamps)
        elif engine == "feast":
            if timestamps:
                raise ValueError("training_features: engine='feast' gives no event timestamps")
            joined = _feast_as_of(store, view, frame[[JOIN_KEYS[view], TIMESTAMP]])
        else:
            raise ValueError(f"training_features: engine {engine!r} is not 'arrow' or 'feast'")
        frame = pd.concat([frame, joined], axis=1)
    frame["user_category_affinity"] = category_affinity(frame)
    return frame


def _as_of(store: FeatureStore, view: str, rows: pd.DataFrame, timestamps: bool) -> pd.DataFrame:
    """The view's features as of each row's time: merge_asof (backward, exact times included)
    per entity, then the ttl; aligned with `rows`' index."""
    definition = _view(store, view)
    key, features = definition.join_keys[0], [f.name for f in definition.features]
    ttl = pd.Timedelta(definition.ttl) if definition.ttl else None
    times = rows[TIMESTAMP]
    log = read_feature_log(
        store,
        view,
        start=(times.min() - ttl) if ttl is not None and len(rows) else None,
        end=times.max() if len(rows) else None,
        keys=rows[key].dropna().unique().tolist(),
    )
    stamp = f"{view}__{TIMESTAMP}"
    log = log.rename(columns={TIMESTAMP: stamp})
    left = rows.assign(_row=np.arange(len(rows)))
    left[TIMESTAMP] = left[TIMESTAMP].astype("datetime64[ns, UTC]")
    joined = pd.merge_asof(
        left.sort_values(TIMESTAMP, kind="stable"),
        log,
        left_on=TIMESTAMP,
        right_on=stamp,
        by=key,
        direction="backward",
        allow_exact_matches=True,
    ).sort_values("_row")
    if ttl is not None:
        stale = joined[stamp] < joined[TIMESTAMP] - ttl
        joined.loc[stale, [*features, stamp]] = None
    out = joined[features + ([stamp] if timestamps else [])].reset_index(drop=True)
    return _typed(out.set_axis(rows.index), definition)


def _feast_as_of(store: FeatureStore, view: str, rows: pd.DataFrame) -> pd.DataFrame:
    """Feast's own point-in-time join, one view per call on unique (key, time) pairs (around
    feast#6787), merged back so rows Feast drops get nulls."""
    definition = _view(store, view)
    key, features = definition.join_keys[0], [f.name for f in definition.features]
    unique = rows.drop_duplicates().reset_index(drop=True)
    if not _has_files(definition.batch_source.path) or unique.empty:
        got = unique.assign(**{f: None for f in features})
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = store.get_historical_features(
                entity_df=unique, features=[f"{view}:{f}" for f in features]
            ).to_df()
    got[TIMESTAMP] = _utc(got[TIMESTAMP])
    out = rows.merge(got[[key, TIMESTAMP, *features]], on=[key, TIMESTAMP], how="left")
    return _typed(out[features].set_axis(rows.index), definition)


def _typed(frame: pd.DataFrame, view: FeatureView) -> pd.DataFrame:
    """The view's dtypes whatever the source gave: float64, Int64 (nullable), object strings."""
    for field in view.features:
        if field.dtype == Int64:
            frame[field.name] = pd.array(frame[field.name], dtype="Int64")
        elif field.dtype == Float64:
            frame[field.name] = pd.to_numeric(frame[field.name], errors="coerce").astype(float)
        else:
            frame[field.name] = (
                frame[field.name].astype(object).where(frame[field.name].notna(), None)
            )
    return frame


def catalog_snapshot(store: FeatureStore, end: pd.Timestamp | None = None) -> list[dict]:
    """Every product the catalog has announced, with its newest category and popularity (at or
    before `end`), most popular first: the index retrieval draws candidates from. The online
    store can only be read by key, so whoever proposes products must know the ids; the serving
    side then reads each one's live features from the online store."""
    log = read_feature_log(store, "product_catalog", end=end)
    newest = log.drop_duplicates("product_id", keep="last")
    newest = newest.sort_values(["popularity", "product_id"], ascending=[False, True])
    return [
        {"product_id": pid, "category": cat, "popularity": float(pop)}
        for pid, cat, pop in zip(
            newest["product_id"], newest["category"], newest["popularity"], strict=True
        )
    ]


def write_catalog_index(store: FeatureStore, end: datetime) -> list[str]:
    """The retrieval index online: every product id the catalog announced up to `end`, most
    popular first, as the one row of the catalog_index view (newest wins, so an older run never
    replaces a newer index). Returns the ids."""
    moment = pd.Timestamp(_aware(end))
    ids = [p["product_id"] for p in catalog_snapshot(store, end=moment)]
    frame = pd.DataFrame({INDEX_KEY: [INDEX_ID], "product_ids": [ids], TIMESTAMP: [moment]})
    write_online(store, INDEX_VIEW, frame)
    return ids


def category_affinity(frame: pd.DataFrame) -> pd.Series:
    """user_category_affinity, defined once: the user's affinity_<category> for the row's product
    category (null when the category or the affinity is unknown)."""
    affinities = frame[[f"affinity_{c}" for c in CATEGORIES]].to_numpy(dtype=float, na_value=np.nan)
    index = frame["category"].map({c: i for i, c in enumerate(CATEGORIES)})
    known = index.notna().to_numpy()
    values = np.full(len(frame), np.nan)
    values[known] = affinities[np.flatnonzero(known), index[known].astype(int).to_numpy()]
    return pd.Series(values, index=frame.index, name="user_category_affinity")


def online_features(
    store: FeatureStore,
    user_ids: Sequence[str],
    product_ids: Sequence[str],
    *,
    timestamps: bool = False,
) -> pd.DataFrame:
    """What serving reads: the newest user and product features for each (user_id, product_id)
    pair, plus user_category_affinity, in the pairs' order; nulls for an unknown entity.
    timestamps=True adds `<view>__event_timestamp` (Feast returns whole seconds)."""
    if len(user_ids) != len(product_ids):
        raise ValueError(
            f"online_features: {len(user_ids)} user_ids but {len(product_ids)} product_ids "
            "(one pair per row: repeat the user for a list of products)"
        )
    refs = [f"{view}:{f}" for view, names in VIEW_FEATURES.items() for f in names]
    response = store.get_online_features(
        features=refs,
        entity_rows={"user_id": list(user_ids), "product_id": list(product_ids)},
    )
    raw = response.to_dict(include_event_timestamps=timestamps)
    frame = pd.DataFrame({"user_id": list(user_ids), "product_id": list(product_ids)})
    for view, names in VIEW_FEATURES.items():
        part = pd.DataFrame({name: raw[name] for name in names})
        frame = pd.concat([frame, _typed(part, _view(store, view))], axis=1)
        if timestamps:
            seconds = pd.Series(raw[f"{names[0]}__ts"], dtype="float64")
            stamps = pd.to_datetime(seconds, unit="s", utc=True)
            frame[f"{view}__{TIMESTAMP}"] = stamps.where(frame[names[0]].notna())
    frame["user_category_affinity"] = category_affinity(frame)
    return frame
