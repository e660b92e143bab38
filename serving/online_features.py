"""The online store as the transformer reads it: Feast's feature server over HTTP.

KServe's pattern for Feast: the transformer asks the feature server (`feast serve`, or
`shop-features serve` locally) for the entities' features; the server reads Redis. The transformer
therefore needs no Feast, no Redis client and no copy of the definitions, only the views' and
features' names (features/definitions.py defines them; the names are the event contract's).

`/get-online-features` answers column-wise: for every requested feature a list of values, one
per entity, with a status per value. An entity the store has never seen comes back as nulls
(Feast 0.67's server still says PRESENT for them; older ones said NOT_FOUND): either way it is
returned here as None.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx
import orjson

from contract.events import PRODUCT_CATALOG_FEATURES, USER_PROFILE_FEATURES

USER_VIEW, PRODUCT_VIEW, INDEX_VIEW = "user_profile", "product_catalog", "catalog_index"
USER_KEY, PRODUCT_KEY = "user_id", "product_id"
INDEX_KEY, INDEX_ID = "catalog", "shop"  # the retrieval index's one entity
PRESENT = "PRESENT"


class OnlineStoreError(RuntimeError):
    """The feature server did not answer, or answered something else than features: a 503."""


class FeatureServerClient:
    def __init__(self, url: str, timeout_s: float = 2.0):
        self.url = url.rstrip("/")
        self._client = httpx.AsyncClient(
            timeout=timeout_s, limits=httpx.Limits(max_keepalive_connections=32)
        )

    async def read(
        self, view: str, key: str, ids: Sequence[str], features: Sequence[str]
    ) -> list[dict[str, Any] | None]:
        """One dict of features per id, in the ids' order; None for an id the store lacks."""
        try:
            response = await self._client.post(**self._request(view, key, ids, features))
        except httpx.HTTPError as err:
            raise OnlineStoreError(
                f"feature server {self.url}: {type(err).__name__} {err}"
            ) from err
        return self._answer(response, key, ids, features)

    def read_blocking(
        self, view: str, key: str, ids: Sequence[str], features: Sequence[str]
    ) -> list[dict[str, Any] | None]:
        """`read` for a thread without an event loop (the catalog's refresh)."""
        try:
            with httpx.Client(timeout=self._client.timeout) as client:
                response = client.post(**self._request(view, key, ids, features))
        except httpx.HTTPError as err:
            raise OnlineStoreError(
                f"feature server {self.url}: {type(err).__name__} {err}"
            ) from err
        return self._answer(response, key, ids, features)

    def _request(self, view: str, key: str, ids: Sequence[str], features: Sequence[str]) -> dict:
        body = {"entities": {key: list(ids)}, "features": [f"{view}:{f}" for f in features]}
        return {
            "url": f"{self.url}/get-online-features",
            "content": orjson.dumps(body),
            "headers": {"content-type": "application/json"},
        }

    def _answer(
        self, response: httpx.Response, key: str, ids: Sequence[str], features: Sequence[str]
    ) -> list[dict[str, Any] | None]:
        if response.status_code != 200:
            raise OnlineStoreError(
                f"feature server {self.url}: {response.status_code} {response.text[:200]}"
            )
        return _rows(orjson.loads(response.content), key, ids, features)

    async def user(self, user_id: str) -> dict[str, Any] | None:
        return (await self.read(USER_VIEW, USER_KEY, [user_id], USER_PROFILE_FEATURES))[0]

    def products_blocking(self, product_ids: Sequence[str]) -> list[dict[str, Any] | None]:
        return self.read_blocking(PRODUCT_VIEW, PRODUCT_KEY, product_ids, PRODUCT_CATALOG_FEATURES)

    def catalog_ids_blocking(self) -> list[str]:
        """The retrieval index: every product id, most popular first (`shop-features
        materialize` writes it); an OnlineStoreError when there is none yet."""
        row = self.read_blocking(INDEX_VIEW, INDEX_KEY, [INDEX_ID], ["product_ids"])[0]
        if not row or not row["product_ids"]:
            raise OnlineStoreError(
                f"feature server {self.url}: no retrieval index ({INDEX_VIEW} is empty; "
                "`shop-features materialize` writes it)"
            )
        return [str(i) for i in row["product_ids"]]

    async def close(self) -> None:
        await self._client.aclose()


def _rows(
    answer: dict, key: str, ids: Sequence[str], features: Sequence[str]
) -> list[dict[str, Any] | None]:
    """Feast's column-wise answer as rows. A row is None unless every feature is PRESENT and not
    null: a profile with a missing field cannot be scored the way training joined it."""
    try:
        names = answer["metadata"]["feature_names"]
        columns = dict(zip(names, answer["results"], strict=True))
        wanted = [columns[f] for f in features]
    except (KeyError, TypeError, ValueError) as err:
        raise OnlineStoreError(f"feature server answered no features: {err!r}") from err
    rows: list[dict[str, Any] | None] = []
    for i in range(len(ids)):
        if all(c["statuses"][i] == PRESENT and c["values"][i] is not None for c in wanted):
            rows.append(
                {f: column["values"][i] for f, column in zip(features, wanted, strict=True)}
            )
        else:
            rows.append(None)
    return rows
