"""The ranking model as a kserve.Model: V1 and V2 requests in, purchase probabilities out.

kserve 0.15 has no TensorFlow predictor, so this is ours: preprocess validates the raw features
against the contract (4xx naming the field), predict scores through the micro-batcher on the live
version (or the A/B variant's version), postprocess answers in the request's protocol. Every
answer carries the version in a header; every scored instance goes to the request log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
from kserve import Model
from kserve.errors import InferenceError, InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

from serving import binary_tensors, metrics
from serving.ab import CANDIDATE, CONTROL, variant
from serving.batcher import MicroBatcher
from serving.contract import V2_DATATYPES, RequestError
from serving.model_store import LoadedVersion, load_version
from serving.request_log import RequestLog
from serving.versions import fingerprint, join, numbered_versions

log = logging.getLogger("serving")

VERSION_HEADER = "x-model-version"
VARIANT_HEADER = "x-ab-variant"


class BadRequest(InvalidInput):
    """A request the contract rejects: 400 with the message, logged as one line (no traceback)."""


class RequestTooLarge(BadRequest):
    """More instances than serving.max_instances: answered with 413, not 400."""


class NonFiniteScores(InferenceError):
    """The model returned NaN or inf: a 500, never a 200 with nulls (kserve logs the reason)."""


@dataclass(frozen=True)
class ServerSettings:
    model_dir: str
    model_name: str
    pinned_version: str | None = None
    max_instances: int = 1000
    max_string_length: int = 256
    max_concurrency: int = 16
    retry_after_s: int = 1
    batch_max_size: int = 64
    batch_timeout_ms: float = 0.0
    reload_interval_s: float = 2.0
    ab_candidate_percent: int = 0
    ab_key: str = "user_id"
    request_log: str | None = None


@dataclass
class _Live:
    version: LoadedVersion
    batcher: MicroBatcher


@dataclass
class _Scoring:
    """What preprocess hands to predict."""

    protocol: str
    columns: dict[str, np.ndarray]  # one array per feature (serving/contract.py)
    ids: list | None
    request_id: str
    started: float
    columnar: bool = False
    binary_outputs: bool = False  # V2: the client asked for binary tensor data back
    requested_outputs: list | None = None  # V2: the outputs asked for (ours has one)


class RankingModel(Model):
    def __init__(self, settings: ServerSettings):
        super().__init__(settings.model_name, return_response_headers=True)
        self.settings = settings
        self.request_log = RequestLog(settings.request_log)
        self.live: dict[str, _Live] = {}  # variant -> live version; control only without A/B
        self._fingerprints: dict[str, tuple] = {}
        self._warned_single = False

    # -- versions ------------------------------------------------------------------------------
    def _wanted(self) -> dict[str, str]:
        """variant -> version folder: the pinned or newest; with A/B the candidate is the newest
        and the control the one before it."""
        versions = numbered_versions(self.settings.model_dir)
        if self.settings.pinned_version:
            if self.settings.pinned_version not in versions:
                raise FileNotFoundError(
                    f"{self.settings.model_dir}/{self.settings.pinned_version}: pinned version "
                    f"not found (versions: {versions})"
                )
            return {CONTROL: self.settings.pinned_version}
        if not versions:
            raise FileNotFoundError(
                f"{self.settings.model_dir}: no numbered version folder (has Pusher pushed a model?)"
            )
        if self.settings.ab_candidate_percent and len(versions) >= 2:
            return {CONTROL: versions[-2], CANDIDATE: versions[-1]}
        if self.settings.ab_candidate_percent and not self._warned_single:
            self._warned_single = True
            log.warning("A/B split asked for, but only version %s exists: serving it to everyone "
                        "until a second version is pushed", versions[-1])  # fmt: skip
        return {CONTROL: versions[-1]}

    def _make_live(self, version: str) -> _Live:
        loaded = load_version(
            self.settings.model_dir,
            version,
            max_instances=self.settings.max_instances,
            max_string_length=self.settings.max_string_length,
        )
        batcher = MicroBatcher(
            loaded.score,
            self.settings.batch_max_size,
            self.settings.batch_timeout_ms / 1000,
            on_batch=metrics.BATCH_SIZE.labels(self.name).observe,
        )
        return _Live(loaded, batcher)

    def _settled(self, version: str) -> bool:
        """True once the version folder looked the same on two consecutive polls."""
        now = fingerprint(join(self.settings.model_dir, version))
        before = self._fingerprints.get(version)
        self._fingerprints[version] = now
        return before == now

    def _refresh(self, initial: bool = False) -> bool:
        """Loads what _wanted() names and is not live yet; True when something changed. At start
        the folders are taken as they are; later a new one must first stop changing."""
        wanted = self._wanted()
        by_version = {live.version.version: live for live in self.live.values()}
        if not initial and not all(v in by_version or self._settled(v) for v in wanted.values()):
            return False
        changed = False
        fresh: dict[str, _Live] = {}
        for name, version in wanted.items():
            fresh[name] = by_version.get(version) or self._make_live(version)
            changed |= name not in self.live or self.live[name].version.version != version
        changed |= set(fresh) != set(self.live)
        if changed:
            self.live = fresh  # one assignment: requests in flight keep their _Live
            for name, live in fresh.items():
                metrics.LIVE_VERSION.labels(self.name, name).set(int(live.version.version))
                log.info("serving %s as %s (%s)", live.version.version, name, live.version.path)
            # A retired version's batcher answers what it accepted, then is garbage with it.
        return changed

    def load(self) -> bool:
        self._refresh(initial=True)
        self.ready = True
        return self.ready

    async def watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.settings.reload_interval_s)
            try:
                if await loop.run_in_executor(None, self._refresh):
                    metrics.RELOADS.labels(self.name, "ok").inc()
            except Exception as err:  # keep serving what is live; try again at the next poll
                metrics.RELOADS.labels(self.name, "failed").inc()
                log.warning("new version not loaded, still serving the old one: %s", err)

    # -- metadata ------------------------------------------------------------------------------
    def _contract(self):
        return self.live[CONTROL].version.contract

    def get_input_types(self) -> list[dict]:
        return self._contract().input_metadata()

    def get_output_types(self) -> list[dict]:
        return [{"name": self._contract().output, "datatype": "FP32", "shape": [-1]}]

    # -- request path --------------------------------------------------------------------------
    async def preprocess(self, payload: Any, headers: dict[str, str] | None = None) -> _Scoring:
        started = time.perf_counter()
        request_id = (headers or {}).get("x-request-id") or uuid.uuid4().hex
        protocol = "v2" if isinstance(payload, InferRequest) else "v1"
        columnar = False
        v2_answer: dict[str, Any] = {}
        try:
            contract = self._contract()
            if isinstance(payload, (bytes, str)):  # a body without a JSON content-type (curl -d)
                payload = _json_body(payload)
            if protocol == "v2":
                columns, ids = contract.from_columns(_v2_columns(payload, contract))
                request_id = payload.id or request_id
                v2_answer = _v2_answer_format(payload, contract)
            elif not isinstance(payload, dict):
                raise RequestError("the body must be a JSON object with 'instances' or 'inputs'")
            elif "instances" in payload:
                columns, ids = contract.from_instances(payload["instances"])
            elif "inputs" in payload:
                columns, ids = contract.from_columns(payload["inputs"])
                columnar = True
            else:
                raise RequestError("the body needs 'instances' (rows) or 'inputs' (columns)")
        except RequestError as err:
            outcome = "too_large" if err.status == 413 else "invalid"
            metrics.REQUESTS.labels(self.name, protocol, outcome).inc()
            raise (RequestTooLarge if err.status == 413 else BadRequest)(str(err)) from None
        return _Scoring(protocol, columns, ids, request_id, started, columnar, **v2_answer)

    def validate(self, payload: Any) -> Any:
        return payload  # preprocess already did, against the contract

    def _route(self, columns: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray | None]]:
        """(variant, instance indexes) groups; None for every instance (control, without A/B)."""
        live = self.live
        if CANDIDATE not in live:
            return [(CONTROL, None)]
        keys = columns.get(self.settings.ab_key)
        if keys is None:
            raise BadRequest(f"A/B split needs the field {self.settings.ab_key!r}")
        groups: dict[str, list[int]] = {CONTROL: [], CANDIDATE: []}
        for i, key in enumerate(keys):  # V2 binary strings are UTF-8 bytes: bucket their text
            key = key.decode() if isinstance(key, bytes) else key
            groups[variant(key, self.settings.ab_candidate_percent)].append(i)
        return [(name, np.array(idx)) for name, idx in groups.items() if idx]

    async def predict(
        self,
        payload: _Scoring,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict | InferResponse:
        live = self.live  # this request finishes on these versions, whatever loads meanwhile
        n = len(next(iter(payload.columns.values())))
        scores = np.zeros(n)
        versions, variants = [], []
        try:
            for name, idx in self._route(payload.columns):
                if idx is None:  # the whole request: no copy
                    idx, part, ids = np.arange(n), payload.columns, payload.ids
                else:
                    part = {k: v[idx] for k, v in payload.columns.items()}
                    ids = [payload.ids[i] for i in idx] if payload.ids else None
                got = await live[name].batcher.submit(part, len(idx))
                version = live[name].version.version
                _check_finite(got, idx, version, payload.request_id)
                scores[idx] = got
                versions.append(version)
                variants.append(name)
                metrics.INSTANCES.labels(self.name, version, name).inc(len(idx))
                self.request_log.write(
                    request_id=payload.request_id,
                    model=self.name,
                    version=version,
                    variant=name if CANDIDATE in live else None,
                    protocol=payload.protocol,
                    columns=part,
                    ids=ids,
                    scores=got,
                )
        except InvalidInput:
            metrics.REQUESTS.labels(self.name, payload.protocol, "invalid").inc()
            raise
        except NonFiniteScores:
            metrics.REQUESTS.labels(self.name, payload.protocol, "non_finite").inc()
            raise
        except Exception:
            metrics.REQUESTS.labels(self.name, payload.protocol, "error").inc()
            raise
        metrics.REQUESTS.labels(self.name, payload.protocol, "ok").inc()
        metrics.LATENCY.labels(self.name, payload.protocol).observe(
            time.perf_counter() - payload.started
        )
        if response_headers is not None:
            response_headers[VERSION_HEADER] = ",".join(versions)
            if CANDIDATE in live:
                response_headers[VARIANT_HEADER] = ",".join(variants)
        output = self._contract().output
        scores = scores.tolist()
        if payload.protocol == "v2":
            return InferResponse(
                response_id=payload.request_id,
                model_name=self.name,
                model_version=",".join(versions),
                infer_outputs=[InferOutput(output, [n], "FP32", scores)],
                use_binary_outputs=payload.binary_outputs,
                requested_outputs=payload.requested_outputs,
            )
        # TF Serving's answer shapes: rows -> "predictions", columns -> "outputs".
        return {"outputs" if payload.columnar else "predictions": scores}


def _check_finite(scores: np.ndarray, idx: np.ndarray, version: str, request_id: str) -> None:
    bad = idx[~np.isfinite(scores)].tolist()
    if bad:
        shown = ", ".join(str(i) for i in bad[:10]) + (", ..." if len(bad) > 10 else "")
        raise NonFiniteScores(
            f"version {version} returned a non-finite score for instance(s) {shown} of request "
            f"{request_id}; no score of it was answered"
        )


def _v2_answer_format(request: InferRequest, contract) -> dict[str, Any]:
    """How the client wants the answer: binary or JSON data, and which outputs (only ours)."""
    asked = request.request_outputs or []
    unknown = sorted({o.name for o in asked} - {contract.output})
    if unknown:
        raise RequestError(f"output(s) {unknown} requested; the model has {[contract.output]}")
    return {"binary_outputs": bool(request.use_binary_outputs), "requested_outputs": asked or None}


def _json_body(body: bytes | str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as err:
        raise RequestError(f"the body is not JSON: {err}") from None


def _flatten(data: Any) -> list:
    if not isinstance(data, list):
        raise RequestError("tensor data must be a list")
    if data and isinstance(data[0], list):
        return [v for row in data for v in (row if isinstance(row, list) else [row])]
    return data


def _object_array(values: list) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def _v2_columns(request: InferRequest, contract) -> dict[str, list | np.ndarray]:
    """V2 tensors as columns, after checking datatype and shape against the contract: JSON data
    as the list sent (the contract does the typing, nothing is cast silently), binary data as
    the numpy array its bytes are (BYTES: an object array of bytes; serving/binary_tensors.py)."""
    columns: dict[str, list | np.ndarray] = {}
    for tensor in request.inputs:
        name = tensor.name
        spec = contract.features.get(name)
        if spec is not None and tensor.datatype not in V2_DATATYPES[spec["type"]]:
            raise RequestError(
                f"field {name!r}: datatype {tensor.datatype}, expected "
                f"{' or '.join(V2_DATATYPES[spec['type']])}"
            )
        shape = list(tensor.shape)
        if len(shape) == 2 and shape[1] == 1:
            shape = shape[:1]
        if len(shape) != 1:
            raise RequestError(f"field {name!r}: shape {tensor.shape}, expected [n] or [n, 1]")
        try:
            if getattr(tensor, "_raw_data", None) is not None:  # binary tensor data
                values = binary_tensors.values(tensor)
            else:
                values = _flatten(tensor.data)
                if bytes in set(map(type, values)):  # gRPC BYTES contents: as binary data is
                    values = _object_array(values)
        except Exception as err:  # data and shape disagree, or a malformed BYTES tensor
            raise RequestError(f"field {name!r}: {err}") from None
        if len(values) != shape[0]:
            raise RequestError(f"field {name!r}: {len(values)} values for shape {tensor.shape}")
        columns[name] = values
    return columns
