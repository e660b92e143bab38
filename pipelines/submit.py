"""Submit a compiled KFP v2 pipeline package to a Kubeflow Pipelines API server.

Compiling and submitting are separate steps so a package can be reviewed, versioned and
re-submitted without TFX installed where it is submitted from. Every upload becomes a new
*version* of one named pipeline, so the KFP UI keeps the history of what ran, and every run
points at the exact version it was started from.

Only kfp's public `Client` methods are used (kfp 2.5, API v2beta1).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

import kfp
import kfp_server_api
import urllib3
import yaml

from pipelines.kfp_spec import check_pipeline_root, read_package

_CRON_FIELDS = ("second", "minute", "hour", "day-of-month", "month", "day-of-week")
_BODY_LIMIT = 2000  # characters of an error body worth showing; KFP errors are short JSON


class SubmitError(RuntimeError):
    """The KFP API refused or could not be reached; the message says where and at which step."""


@dataclass(frozen=True)
class SubmitResult:
    """What was created, so callers can print it, link to it, or wait on the run."""

    pipeline_id: str
    version_id: str
    experiment_id: str
    run_id: str | None
    recurring_run_id: str | None
    url: str


def submit(
    package_path: str,
    host: str,
    *,
    pipeline_name: str,
    version_name: str | None = None,
    experiment: str,
    namespace: str | None = None,
    parameters: dict[str, object] | None = None,
    schedule: str | None = None,
    run_name: str | None = None,
    pipeline_root: str | None = None,
    existing_token: str | None = None,
    client_factory: Callable[..., kfp.Client] = kfp.Client,
) -> SubmitResult:
    """Upload `package_path` as a pipeline version, then run it once or on a cron `schedule`.

    Inputs are checked before the first request, so a typo costs no half-done submission.
    `version_name` only names versions added to an existing pipeline: a new pipeline's first
    version is named by the server after the pipeline. `schedule` is KFP's 6-field cron
    (seconds first); a recurring run never overlaps itself and does not backfill missed runs.
    `pipeline_root` is sent as the run's runtimeConfig.pipelineRoot: the KFP backend never reads
    the spec's own, and without it would write to minio://mlpipeline/v2/artifacts (or the
    kfp-launcher ConfigMap's root). None = the package's defaultPipelineRoot, sent explicitly.
    """
    _check_inputs(package_path, pipeline_name, schedule)
    pipeline_root = check_pipeline_root(
        pipeline_root or _package_root(package_path),
        "output_root" if pipeline_root else f"{package_path}: defaultPipelineRoot",
    )
    stamp = _utc_stamp()
    version_name = version_name or f"{pipeline_name}-{stamp}"
    run_name = run_name or f"{pipeline_name}-{stamp}"
    params = dict(parameters or {})

    with _step(host, "connect"):
        client = client_factory(
            host=host, existing_token=existing_token, credentials=_in_cluster_credentials()
        )
    with _step(host, "upload"):
        pipeline_id, version_id = _upload(client, package_path, pipeline_name, version_name)
    with _step(host, "experiment"):
        experiment_id = client.create_experiment(name=experiment, namespace=namespace).experiment_id
    with _step(host, "run"):
        if schedule is None:
            run = client.run_pipeline(
                experiment_id=experiment_id,
                job_name=run_name,
                params=params,
                pipeline_id=pipeline_id,
                version_id=version_id,
                pipeline_root=pipeline_root,
            )
            return SubmitResult(
                pipeline_id, version_id, experiment_id, run.run_id, None, run_url(host, run.run_id)
            )
        recurring = client.create_recurring_run(
            experiment_id=experiment_id,
            job_name=run_name,
            cron_expression=schedule,
            max_concurrency=1,
            no_catchup=True,
            params=params,
            pipeline_id=pipeline_id,
            version_id=version_id,
            pipeline_root=pipeline_root,
        )
    rid = recurring.recurring_run_id
    return SubmitResult(
        pipeline_id, version_id, experiment_id, None, rid, recurring_run_url(host, rid)
    )


def _in_cluster_credentials() -> kfp.client.ServiceAccountTokenVolumeCredentials | None:
    """The projected service-account token (manifests/kfp CronJob) when it is mounted.

    kfp.Client only reads that token by itself when no host is given; with `--host` it must be
    passed, or multi-user KFP refuses the calls.
    """
    path = os.environ.get("KF_PIPELINES_SA_TOKEN_PATH", kfp.client.KF_PIPELINES_SA_TOKEN_PATH)
    if os.path.exists(path):
        return kfp.client.ServiceAccountTokenVolumeCredentials(path)
    return None


def parse_parameters(items: list[str]) -> dict[str, object]:
    """Turn CLI `name=value` strings into run parameters, typed the way KFP expects them.

    Scalars are read as YAML (`span=3` is the int 3, `enable=true` a bool). Values that read
    as a mapping or list stay the raw string: the pipeline's JSON-valued parameters are STRING
    parameters, and KFP rejects a struct for them. So do values YAML would turn into
    something JSON cannot carry (dates) or cannot read at all.
    """
    parsed: dict[str, object] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"parameter {item!r}: expected name=value")
        if name in parsed:
            raise ValueError(f"parameter {item!r}: {name!r} given twice")
        parsed[name] = _parse_value(raw)
    return parsed


def run_url(host: str, run_id: str) -> str:
    """The KFP UI page of a run (the UI is served under the same base as the API)."""
    return f"{_ui_base(host)}/#/runs/details/{run_id}"


def recurring_run_url(host: str, recurring_run_id: str) -> str:
    """The KFP UI page of a recurring run."""
    return f"{_ui_base(host)}/#/recurringrun/details/{recurring_run_id}"


def validate_cron(schedule: str) -> None:
    """Fail early on a 5-field (classic) cron: KFP's scheduler wants seconds as field one."""
    fields = schedule.split()
    if len(fields) != len(_CRON_FIELDS):
        raise ValueError(
            f"schedule {schedule!r}: KFP cron needs {len(_CRON_FIELDS)} fields "
            f"({' '.join(_CRON_FIELDS)}), got {len(fields)}; "
            "e.g. '0 0 3 * * *' runs daily at 03:00"
        )


def _check_inputs(package_path: str, pipeline_name: str, schedule: str | None) -> None:
    if not os.path.isfile(package_path):
        raise ValueError(f"pipeline package {package_path!r} does not exist")
    if not pipeline_name.strip():
        raise ValueError("pipeline_name must not be empty")
    if schedule is not None:
        validate_cron(schedule)


def _package_root(package_path: str) -> str:
    spec, _ = read_package(package_path)
    return spec.get("defaultPipelineRoot") or ""


def _upload(
    client: kfp.Client, package_path: str, pipeline_name: str, version_name: str
) -> tuple[str, str]:
    """Add a version to the named pipeline, or create the pipeline; returns (pipeline, version).

    Pipelines are uploaded shared (no namespace) because `get_pipeline_id` only finds
    shared ones; a namespaced upload would create a duplicate on every submit.
    """
    pipeline_id = client.get_pipeline_id(pipeline_name)
    if pipeline_id is not None:
        version = client.upload_pipeline_version(
            package_path, pipeline_version_name=version_name, pipeline_id=pipeline_id
        )
        return pipeline_id, version.pipeline_version_id
    pipeline = client.upload_pipeline(package_path, pipeline_name=pipeline_name)
    return pipeline.pipeline_id, _latest_version_id(client, pipeline.pipeline_id)


def _latest_version_id(client: kfp.Client, pipeline_id: str) -> str:
    """kfp 2.5's upload_pipeline returns the pipeline only; its version is listed separately."""
    listing = client.list_pipeline_versions(pipeline_id, page_size=1, sort_by="created_at desc")
    versions = listing.pipeline_versions or []
    if not versions:
        raise SubmitError(f"pipeline {pipeline_id} was created but lists no version")
    return versions[0].pipeline_version_id


def _parse_value(raw: str) -> object:
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    if value is None or not isinstance(value, str | int | float | bool):
        return raw
    return value


def _ui_base(host: str) -> str:
    # Same normalisation as kfp.Client: https by default, no trailing slash. A `/pipeline`
    # suffix is kept: in full Kubeflow both the API and the UI live under it.
    base = host.rstrip("/")
    return base if base.startswith("http") else f"https://{base}"


def _utc_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


@contextlib.contextmanager
def _step(host: str, step: str) -> Iterator[None]:
    """Re-raise API and network failures as SubmitError naming the host and the step."""
    try:
        yield
    except SubmitError as err:
        raise SubmitError(f"KFP API at {host}: {step} failed: {err}") from err
    except kfp_server_api.ApiException as err:
        raise SubmitError(f"KFP API at {host}: {step} failed: {_describe(err)}") from err
    except (urllib3.exceptions.HTTPError, OSError, ValueError) as err:
        # Connection refused/timeouts (urllib3, OSError) and the client's own checks
        # (duplicate names, malformed responses) are ValueErrors or network errors.
        raise SubmitError(f"KFP API at {host}: {step} failed: {err}") from err


def _describe(err: kfp_server_api.ApiException) -> str:
    body = err.body.decode("utf-8", "replace") if isinstance(err.body, bytes) else err.body
    parts = [f"HTTP {err.status}" if err.status else "no HTTP response", str(err.reason or "")]
    if body:
        parts.append(str(body)[:_BODY_LIMIT])
    return " ".join(p for p in parts if p)
