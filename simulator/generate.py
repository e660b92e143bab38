"""Generates daily spans of impressions: entities, sessions, labels, drift and corrupt rows."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

import contract
from simulator.outcomes import write_outcomes
from simulator.truth import TruthParams, bayes_auc, purchase_probability

MANIFEST = "manifest.json"
CHUNK_ROWS = 250_000  # a multiple of PAGE_SIZE: a page never spans two chunks


@dataclass(frozen=True)
class SimulationOptions:
    """Everything that determines a dataset; the same options and seed give the same bytes."""

    rows_per_span: int = 100_000
    spans: int = 2
    seed: int = 42
    drift: float = 0.0
    drift_from_span: int = 2
    corrupt_fraction: float = 0.0
    corrupt_spans: tuple[int, ...] = ()
    label_shift: float = 1.0
    label_shift_spans: tuple[int, ...] = ()
    users: int | None = None
    products: int | None = None

    def __post_init__(self) -> None:
        if self.rows_per_span < 10:
            raise ValueError(f"rows_per_span must be >= 10, got {self.rows_per_span}")
        if self.spans < 1:
            raise ValueError(f"spans must be >= 1, got {self.spans}")
        if not 0.0 <= self.drift <= 1.0:
            raise ValueError(f"drift must be in [0, 1], got {self.drift}")
        if not 0.0 <= self.corrupt_fraction <= 0.5:
            raise ValueError(f"corrupt_fraction must be in [0, 0.5], got {self.corrupt_fraction}")
        if not self.label_shift > 0.0:
            raise ValueError(f"label_shift must be > 0, got {self.label_shift}")

    @property
    def n_users(self) -> int:
        return self.users or int(np.clip(self.rows_per_span // 20, 200, 200_000))

    @property
    def n_products(self) -> int:
        return self.products or int(np.clip(self.rows_per_span // 50, 100, 50_000))

    def same_shop(self, **changes) -> SimulationOptions:
        """These options with `changes` (more traffic, other spans, drift) and this shop's users
        and products pinned: the shop's size follows rows_per_span, and traffic from another
        shop would look like skew against a model trained on this one."""
        return replace(self, **{"users": self.n_users, "products": self.n_products, **changes})

    def drift_for(self, span: int) -> float:
        return self.drift if span >= self.drift_from_span else 0.0

    def corrupt_for(self, span: int) -> float:
        spans = self.corrupt_spans or (self.spans,)
        return self.corrupt_fraction if span in spans else 0.0

    def label_shift_for(self, span: int) -> float:
        spans = self.label_shift_spans or (self.spans,)
        return self.label_shift if span in spans else 1.0


@dataclass
class SpanReport:
    """What was written for one span, including the ceiling any model can reach on it."""

    span: int
    path: str
    rows: int
    purchase_rate: float
    bayes_auc: float
    drift: float
    corrupt_rows: int
    label_shift: float = 1.0
    truth: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Shop:
    """Users and products: fixed across spans so spans differ only by traffic and drift."""

    user_country: np.ndarray
    user_device_pref: np.ndarray  # (users, devices) probabilities
    user_affinity: np.ndarray  # (users, categories) Dirichlet draws
    user_avg_price: np.ndarray
    user_activity: np.ndarray  # sampling weights
    product_category: np.ndarray
    product_brand: np.ndarray
    product_price: np.ndarray
    product_rating: np.ndarray
    product_popularity: np.ndarray


def build_shop(options: SimulationOptions) -> Shop:
    rng = np.random.default_rng([options.seed, 0])
    n_users, n_products = options.n_users, options.n_products
    n_categories = len(contract.CATEGORIES)
    country_weights = 1.0 / np.arange(1, len(contract.COUNTRIES) + 1)
    device_pref = rng.dirichlet([3.0, 2.0, 0.7], size=n_users)
    category_base_price = np.exp(rng.normal(3.3, 0.6, size=n_categories))
    product_category = rng.integers(0, n_categories, size=n_products)
    brand_in_category = rng.integers(0, contract.BRANDS_PER_CATEGORY, size=n_products)
    return Shop(
        user_country=rng.choice(
            len(contract.COUNTRIES), size=n_users, p=country_weights / country_weights.sum()
        ),
        user_device_pref=device_pref,
        user_affinity=rng.dirichlet(np.full(n_categories, 0.35), size=n_users),
        user_avg_price=np.round(np.exp(rng.normal(3.4, 0.5, size=n_users)), 2),
        user_activity=rng.pareto(1.5, size=n_users) + 1.0,
        product_category=product_category,
        product_brand=product_category * contract.BRANDS_PER_CATEGORY + brand_in_category,
        product_price=category_base_price[product_category]
        * np.exp(rng.normal(0.0, 0.45, size=n_products)),
        product_rating=np.clip(rng.normal(3.9, 0.6, size=n_products), 1.0, 5.0),
        product_popularity=rng.pareto(1.2, size=n_products) + 1.0,
    )


def truth_for(drift: float, label_shift: float = 1.0) -> TruthParams:
    """Concept drift, a gift season: shoppers buy outside their usual categories (affinity counts
    less), chase sales and ratings, are more price-sensitive and shop less on mobile evenings.

    Strong enough that a model trained before the drift ranks drifted traffic clearly worse than
    one retrained on it (what the monitoring scenario shows); a milder version (price and mobile
    evenings only) left the old ground truth within 0.02 AUC of the new one.

    `label_shift` is a prior shift: every impression's purchase odds times the factor (the
    intercept moves by log(factor)), so the purchase rate moves and the ranking does not.
    """
    base = TruthParams()
    return TruthParams.from_dict(
        {
            **base.to_dict(),
            "intercept": base.intercept + float(np.log(label_shift)),
            "affinity": base.affinity * (1.0 - 0.6 * drift),
            "on_sale": base.on_sale * (1.0 + 3.0 * drift),
            "rating": base.rating * (1.0 + 1.5 * drift),
            "price_above_usual": base.price_above_usual * (1.0 + 1.5 * drift),
            "mobile_evening": base.mobile_evening * (1.0 - 1.2 * drift),
        }
    )


# The traffic's pieces, one function each so the event stream (simulator/stream.py) draws visits
# from the same distributions as the batch spans. Each draws from `rng` in a fixed order: the batch
# output for a seed depends on it.
HOUR_WEIGHTS = 1.0 + np.sin((np.arange(24) - 8) / 24 * 2 * np.pi) + 0.3
ON_SALE_RATE = 0.2
SALE_DISCOUNT = 0.8
AFFINITY_NOISE = 0.03
RECENCY_P = 0.25


def sample_users(shop: Shop, n: int, rng: np.random.Generator) -> np.ndarray:
    """User indices, weighted by activity (a few heavy shoppers, a long tail)."""
    weights = shop.user_activity
    return rng.choice(len(weights), size=n, p=weights / weights.sum())


def sample_products(shop: Shop, n: int, rng: np.random.Generator) -> np.ndarray:
    """Product indices, weighted by popularity."""
    weights = shop.product_popularity
    return rng.choice(len(weights), size=n, p=weights / weights.sum())


def sample_devices(
    shop: Shop, users: np.ndarray, drift: float, rng: np.random.Generator
) -> np.ndarray:
    """Device indices from each user's preference; drift moves traffic to mobile."""
    device_pref = shop.user_device_pref[users]
    device_pref = device_pref + drift * np.array([1.5, -0.4, -0.2])
    device_pref = np.clip(device_pref, 1e-3, None)
    device_pref /= device_pref.sum(axis=1, keepdims=True)
    return (rng.random(len(users))[:, None] > np.cumsum(device_pref, axis=1)).sum(axis=1)


def sample_referrers(n: int, drift: float, rng: np.random.Generator) -> np.ndarray:
    """Referrer indices; drift moves traffic to social and ads."""
    referrer_p = np.array([0.30, 0.30, 0.12, 0.14, 0.14]) + drift * np.array(
        [-0.15, -0.1, -0.05, 0.2, 0.1]
    )
    return rng.choice(len(contract.REFERRERS), size=n, p=referrer_p / referrer_p.sum())


def sample_hours(n: int, rng: np.random.Generator) -> np.ndarray:
    """UTC hours of the day, busiest in the afternoon."""
    return rng.choice(24, size=n, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())


def noisy_affinity(affinity: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The log's "share of this user's recent views in a category": a noisy read of the user's
    taste (the strongest single signal), clipped to [0, 1], not rounded."""
    return np.clip(affinity + rng.normal(0.0, AFFINITY_NOISE, size=affinity.shape), 0.0, 1.0)


def sample_recency(n: int, rng: np.random.Generator) -> np.ndarray:
    """Days since the user's last visit (geometric, 0 = earlier today)."""
    return rng.geometric(RECENCY_P, size=n) - 1


def shown_price(shop: Shop, products: np.ndarray, on_sale: np.ndarray, drift: float) -> np.ndarray:
    """The price a shopper sees (not rounded): a discount on sale, drift raises all prices."""
    return (
        shop.product_price[products]
        * np.where(on_sale == 1, SALE_DISCOUNT, 1.0)
        * (1.0 + 0.35 * drift)
    )


# A page: one recommendation request showing PAGE_SIZE distinct products to one user in one
# context, at distinct positions drawn at random from contract.POSITIONS (the logging policy
# places products at random, so position carries no information about the product: the model
# learns its effect unbiased). The context is the page's, so the rows of a page are not
# independent draws: a monitor's window holds rows / PAGE_SIZE draws of device or referrer.
# 10 keeps a 3,000-row window's undrifted device/referrer/country shares within the schema's
# 0.1 drift bar (measured 0.02-0.08 over three seeds; 20 per page reached 0.12).
PAGE_SIZE = 10


def request_ids(span: int, pages: np.ndarray) -> list[str]:
    """The request (page) ids of a span, `s<span>-r<page>`: the query key of NDCG@k."""
    return [f"s{span}-r{p}" for p in pages]


def distinct_per_page(
    shop: Shop, page: np.ndarray, rng: np.random.Generator, rounds: int = 50
) -> np.ndarray:
    """Products by popularity, one per slot, none twice on the same page: slots holding a
    product already shown on their page are redrawn (a few rounds; the last draw stands)."""
    products = sample_products(shop, len(page), rng)
    for _ in range(rounds):
        key = page.astype(np.int64) * len(shop.product_popularity) + products
        _, first = np.unique(key, return_index=True)
        again = np.ones(len(key), dtype=bool)
        again[first] = False
        if not again.any():
            break
        products[again] = sample_products(shop, int(again.sum()), rng)
    return products


def _impressions(
    shop: Shop, rows: int, drift: float, rng: np.random.Generator, start: int, span: int
) -> pd.DataFrame:
    """Samples `rows` impressions on pages of PAGE_SIZE (the span's last page may be cut short):
    user, device, referrer, hour and recency per page, product and sale per impression; drift
    shifts traffic to mobile, social/ads and higher prices. `start` is a multiple of PAGE_SIZE."""
    first_page = start // PAGE_SIZE
    n_pages = -(-rows // PAGE_SIZE)
    users = sample_users(shop, n_pages, rng)
    device = sample_devices(shop, users, drift, rng)
    referrer = sample_referrers(n_pages, drift, rng)
    hour = sample_hours(n_pages, rng)
    recency = sample_recency(n_pages, rng)
    affinity = noisy_affinity(shop.user_affinity[users], rng)  # (pages, categories)
    page = np.repeat(np.arange(n_pages), PAGE_SIZE)[:rows]
    slot = np.tile(np.arange(PAGE_SIZE), n_pages)[:rows]
    low, high = contract.POSITIONS
    order = np.argsort(rng.random((n_pages, high - low + 1)), axis=1)
    position = order[page, slot] + low
    products = distinct_per_page(shop, page, rng)
    category = shop.product_category[products]
    on_sale = (rng.random(rows) < ON_SALE_RATE).astype(np.int64)
    price = shown_price(shop, products, on_sale, drift)
    user = users[page]
    frame = pd.DataFrame(
        {
            "impression_id": [f"s{span}-{i}" for i in range(start, start + rows)],
            "request_id": request_ids(span, first_page + page),
            "user_id": [f"u{u}" for u in user],
            "product_id": [f"p{p}" for p in products],
            "category": np.asarray(contract.CATEGORIES)[category],
            "brand": np.asarray(contract.BRANDS)[shop.product_brand[products]],
            "price": np.round(price, 2),
            "on_sale": on_sale,
            "rating": np.round(shop.product_rating[products], 1),
            "user_avg_price": shop.user_avg_price[user],
            "user_category_affinity": np.round(affinity[page, category], 4),
            "days_since_last_visit": recency[page],
            "device": np.asarray(contract.DEVICES)[device[page]],
            "hour": hour[page],
            "referrer": np.asarray(contract.REFERRERS)[referrer[page]],
            "country": np.asarray(contract.COUNTRIES)[shop.user_country[user]],
            "position": position,
        }
    )
    return frame


CORRUPTIONS = ("missing", "out_of_domain", "wrong_type")


def corrupt(
    frame: pd.DataFrame, fraction: float, rng: np.random.Generator
) -> tuple[pd.DataFrame, int]:
    """Breaks `fraction` of rows the way real exports break: blanks, unknown values, text in numbers."""
    n_bad = int(round(fraction * len(frame)))
    if n_bad == 0:
        return frame, 0
    frame = frame.astype(object)
    bad_rows = rng.choice(len(frame), size=n_bad, replace=False)
    kinds = np.arange(n_bad) % len(CORRUPTIONS)  # every kind appears once there are 3 bad rows
    for row, kind in zip(bad_rows, kinds, strict=True):
        name = CORRUPTIONS[kind]
        if name == "missing":
            frame.iat[
                row,
                frame.columns.get_loc(rng.choice(["price", "device", "user_category_affinity"])),
            ] = ""
        elif name == "out_of_domain":
            column, value = [("device", "smart_fridge"), ("hour", 27), ("rating", 9.5)][
                rng.integers(3)
            ]
            frame.iat[row, frame.columns.get_loc(column)] = value
        else:
            frame.iat[row, frame.columns.get_loc("price")] = "twelve"
    return frame, n_bad


def generate_span(
    options: SimulationOptions,
    span: int,
    shop: Shop | None = None,
    on_chunk: Callable[[int, int], None] | None = None,
) -> tuple[pd.DataFrame, SpanReport]:
    """One span's rows (labels included) and its report; deterministic in (seed, span)."""
    shop = shop or build_shop(options)
    drift = options.drift_for(span)
    label_shift = options.label_shift_for(span)
    truth = truth_for(drift, label_shift)
    rng = np.random.default_rng([options.seed, span])
    chunks = []
    for start in range(0, options.rows_per_span, CHUNK_ROWS):
        rows = min(CHUNK_ROWS, options.rows_per_span - start)
        chunk = _impressions(shop, rows, drift, rng, start, span)
        probability = purchase_probability(chunk, truth)
        chunk[contract.LABEL] = (rng.random(rows) < probability).astype(np.int64)
        chunks.append(chunk)
        if on_chunk:
            on_chunk(start + rows, options.rows_per_span)
    frame = pd.concat(chunks, ignore_index=True)
    auc = bayes_auc(frame, frame[contract.LABEL].to_numpy(), truth)
    frame, n_bad = corrupt(frame, options.corrupt_for(span), rng)
    report = SpanReport(
        span=span,
        path="",
        rows=len(frame),
        purchase_rate=float(pd.to_numeric(frame[contract.LABEL]).mean()),
        bayes_auc=auc,
        drift=drift,
        corrupt_rows=n_bad,
        label_shift=label_shift,
        truth=truth.to_dict(),
    )
    return frame[list(contract.COLUMNS)], report


def write_dataset(
    options: SimulationOptions,
    root: str | Path,
    progress: Callable[[SpanReport], None] | None = None,
    only_spans: list[int] | None = None,
    on_chunk: Callable[[int, int, int], None] | None = None,
) -> list[SpanReport]:
    """Writes span-1..span-N (or `only_spans`) under `root` and a manifest with each span's truth.

    Each span is written to a temporary file and renamed, so a crash never leaves a half span
    that a pipeline could read. The manifest keeps the entries of spans not rewritten. Each span's
    delayed outcome feed goes to outcomes/span-N.csv (simulator.outcomes).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    shop = build_shop(options)
    reports = []
    for span in only_spans or range(1, options.spans + 1):
        chunk_progress = (
            (lambda done, total, s=span: on_chunk(s, done, total)) if on_chunk else None
        )
        frame, report = generate_span(options, span, shop, chunk_progress)
        span_dir = root / f"span-{span}"
        span_dir.mkdir(exist_ok=True)
        target = span_dir / "impressions.csv"
        partial = span_dir / ".impressions.csv.partial"
        frame.to_csv(partial, index=False)
        partial.replace(target)
        write_outcomes(root, span, frame, options.seed)
        report.path = str(target)
        reports.append(report)
        if progress:
            progress(report)
    write_manifest(root, options, reports)
    return reports


def write_manifest(root: str | Path, options: SimulationOptions, reports: list[SpanReport]) -> Path:
    """Records each report (its truth, its options) in root/manifest.json, keeping the entries of
    other spans; written to a temporary file and renamed."""
    root = Path(root)
    manifest = (
        json.loads((root / MANIFEST).read_text()) if (root / MANIFEST).exists() else {"spans": {}}
    )
    options_record = {
        **options.__dict__,
        "corrupt_spans": list(options.corrupt_spans),
        "label_shift_spans": list(options.label_shift_spans),
    }
    for report in reports:
        manifest["spans"][str(report.span)] = {**report.__dict__, "options": options_record}
    partial = root / f".{MANIFEST}.partial"
    partial.write_text(json.dumps(manifest, indent=2, sort_keys=True))
    partial.replace(root / MANIFEST)
    return root / MANIFEST


def read_manifest(root: str | Path) -> dict:
    """The manifest written with the data; names the file when it is missing."""
    path = Path(root) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: generate the data with `shop-sim` first")
    return json.loads(path.read_text())


def truth_of_span(root: str | Path, span: int) -> TruthParams:
    spans = read_manifest(root)["spans"]
    if str(span) not in spans:
        raise KeyError(
            f"span {span} is not in {Path(root) / MANIFEST} (has {sorted(spans, key=int)})"
        )
    return TruthParams.from_dict(spans[str(span)]["truth"])
