"""Candidate retrieval: which products the ranking model scores when a request names none.

A recommendation is two stages: retrieval proposes a few hundred plausible products cheaply, the
ranking model orders them. `Retriever` is the interface between the two, so a learned retrieval
(a two-tower model with an approximate-nearest-neighbour index) can replace the heuristic here
without touching the transformer: it gets the user's online features (None for an unknown user)
and the catalog, and returns product ids in a deterministic order.

`CategoryPopularity` is the heuristic: the user's strongest categories, each filled with its
most popular products in proportion to the user's affinity, then the most popular products
overall. An unknown user gets the most popular products (the cold-start answer).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from contract.columns import CATEGORIES


@dataclass(frozen=True)
class CatalogEntry:
    product_id: str
    category: str
    popularity: float


@dataclass(frozen=True)
class Catalog:
    """The products retrieval may propose, most popular first (ties by id: deterministic)."""

    entries: tuple[CatalogEntry, ...]
    by_category: Mapping[str, tuple[str, ...]] = field(init=False)
    ids: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.entries, key=lambda e: (-e.popularity, e.product_id)))
        object.__setattr__(self, "entries", ordered)
        groups: dict[str, list[str]] = {}
        for entry in ordered:
            groups.setdefault(entry.category, []).append(entry.product_id)
        object.__setattr__(self, "by_category", {c: tuple(v) for c, v in groups.items()})
        object.__setattr__(self, "ids", frozenset(e.product_id for e in ordered))

    def popular(self, n: int, exclude: set[str] | frozenset[str] = frozenset()) -> list[str]:
        return [e.product_id for e in self.entries if e.product_id not in exclude][:n]


class Retriever(Protocol):
    """Proposes up to n candidate product ids for a user (None: unknown to the online store)."""

    name: str

    def propose(self, user: Mapping[str, float] | None, n: int, catalog: Catalog) -> list[str]: ...


@dataclass(frozen=True)
class CategoryPopularity:
    """The user's `categories` strongest categories by affinity, each given a share of n in
    proportion to its affinity and filled with its most popular products, then topped up with
    the most popular products overall."""

    categories: int = 3
    name: str = "category_popularity"

    def propose(self, user: Mapping[str, float] | None, n: int, catalog: Catalog) -> list[str]:
        if user is None:
            return catalog.popular(n)
        affinity = {c: float(user.get(f"affinity_{c}") or 0.0) for c in CATEGORIES}
        strongest = sorted(CATEGORIES, key=lambda c: (-affinity[c], c))[: self.categories]
        total = sum(affinity[c] for c in strongest)
        chosen: list[str] = []
        if total > 0:
            for category in strongest:
                share = round(n * affinity[category] / total)
                chosen += list(catalog.by_category.get(category, ()))[:share]
        chosen = chosen[:n]
        return chosen + catalog.popular(n - len(chosen), exclude=set(chosen))
