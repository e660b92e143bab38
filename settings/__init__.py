"""One typed configuration for the pipeline, its runners, the compiler and the notebooks.

Values come from settings/conf/<env>.yaml (or a YAML file's path), then `section.key=value` overrides (from the CLI or a notebook).
Unknown keys and wrongly typed values fail with the field's dotted name.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

# The named configs ship inside the package (package data), so `--config kubeflow` works from an
# installed wheel or the image as well as from a checkout.
CONF_DIR = Path(__file__).resolve().parent / "conf"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    """Where the shop's spans are and which one to train on."""

    root: str = "data/shop"
    span: int | None = Field(None, ge=1, description="span to train on; None = the newest span-N")
    file_pattern: str = "span-{SPAN}/*.csv"
    train_buckets: int = Field(4, ge=1, description="hash split: train share = train/(train+eval)")
    eval_buckets: int = Field(1, ge=1)
    csv_reader: Literal["arrow", "tfx"] = Field(
        "arrow",
        description="ExampleGen's CSV reader: arrow = columnar parse + C++ tf.Example encoder "
        "(components/arrow_csv.py); tfx = TFX's CsvExampleGen executor, cell by cell in Python",
    )


class BeamConfig(_Section):
    """Beam runner for the data stages (ExampleGen, StatisticsGen, Transform, Evaluator)."""

    runner: Literal["DirectRunner", "DataflowRunner", "FlinkRunner", "SparkRunner"] = "DirectRunner"
    direct_running_mode: Literal["in_memory", "multi_threading", "multi_processing"] = "in_memory"
    direct_num_workers: int = Field(1, ge=0, description="0 = one worker per core")
    extra_args: list[str] = Field(default_factory=list, description="passed to Beam as they are")

    def pipeline_args(self) -> list[str]:
        args = [f"--runner={self.runner}"]
        if self.runner == "DirectRunner":
            args += [
                f"--direct_running_mode={self.direct_running_mode}",
                f"--direct_num_workers={self.direct_num_workers}",
            ]
        return args + list(self.extra_args)


class ObjectStoreConfig(_Section):
    """The S3 API that s3:// URIs (pipeline root, data, pushed models) resolve to: KFP's MinIO, or
    AWS S3 when `endpoint` is None. gs:// needs nothing here (TensorFlow and Beam reach GCS
    themselves). Credentials never live in the config: on Kubeflow they come from a Secret."""

    endpoint: str | None = Field(
        None, description="http(s)://host:port of an S3 API server; None = AWS S3"
    )
    region: str = "us-east-1"
    credentials_secret: str | None = Field(
        "mlpipeline-minio-artifact",
        description="Kubernetes Secret every step reads its keys from (KFP's own MinIO secret)",
    )
    access_key_field: str = Field("accesskey", description="the Secret's key of the access key")
    secret_key_field: str = Field("secretkey", description="the Secret's key of the secret key")

    @field_validator("endpoint")
    @classmethod
    def _endpoint_is_a_url(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^/\s]+/?", value):
            raise ValueError(f"{value!r}: expected http://host:port or https://host:port")
        return value.rstrip("/") if value else value

    def environment(self) -> dict[str, str]:
        """Settings tensorflow-io's and boto3's S3 clients read (not the keys)."""
        env = {"AWS_REGION": self.region, "AWS_DEFAULT_REGION": self.region}
        if self.endpoint:
            secure = self.endpoint.startswith("https://")
            env.update(
                S3_ENDPOINT=self.endpoint,  # tensorflow-io: the scheme says http or https
                S3_USE_HTTPS="1" if secure else "0",
                S3_VERIFY_SSL="1" if secure else "0",
                AWS_ENDPOINT_URL_S3=self.endpoint,  # boto3 >= 1.28
            )
        return env

    def key_variables(self) -> dict[str, str]:
        """Environment variable -> the Secret's key that fills it (the S3 clients' key pair)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key_field,
            "AWS_SECRET_ACCESS_KEY": self.secret_key_field,
        }

    def beam_args(self) -> list[str]:
        """Beam's S3 filesystem options (apache-beam[aws]); keys from the environment."""
        args = [f"--s3_region_name={self.region}"]
        if self.endpoint:
            args.append(f"--s3_endpoint_url={self.endpoint}")
            if self.endpoint.startswith("http://"):
                args.append("--s3_disable_ssl")
        return args


class ValidationConfig(_Section):
    """The data gate: which anomalies stop the run before Transform."""

    compare_with_previous_span: bool = True
    block_on_drift: bool = Field(
        False, description="drift is reported always; it stops the run only when this is true"
    )
    sketch_statistics: bool = Field(
        True,
        description="StatisticsGen's top values and unique counts from sketches (Misra-Gries, "
        "KMV): exact while a feature has fewer distinct values than the rank histogram keeps "
        "(1000: every domain feature here), approximate for the ids; 1.8x less StatisticsGen time",
    )
    transform_statistics: bool = Field(
        False,
        description="Transform's own pre- and post-transform statistics and anomalies: two more "
        "TFDV passes over the data that nothing in this pipeline reads (BENCHMARKS.md)",
    )


class TransformConfig(_Section):
    """Feature engineering sizes, passed to preprocessing_fn as custom_config."""

    user_hash_buckets: int = Field(2000, ge=1)
    product_hash_buckets: int = Field(1000, ge=1)
    price_buckets: int = Field(10, ge=2)
    cross_hash_buckets: int = Field(200, ge=1)


class TrainingConfig(_Section):
    """Hyperparameters of the ranking model (the tuner replaces these when it runs)."""

    train_steps: int = Field(2000, ge=1)
    eval_steps: int = Field(100, ge=1)
    batch_size: int = Field(512, ge=1)
    learning_rate: float = Field(0.003, gt=0)
    embedding_dim: int = Field(8, ge=1)
    hidden_units: list[int] = Field(default_factory=lambda: [64, 32])
    cross_layers: int = Field(2, ge=0)
    dropout: float = Field(0.3, ge=0, lt=1)
    l2: float = Field(1e-3, ge=0)
    seed: int = 42


# Hyperparameters a search may change: TrainingConfig's fields except the step counts (a trial's
# budget, not a model setting) and the seed.
NOT_TUNABLE = frozenset({"train_steps", "eval_steps", "seed"})


# The settings each Katib 0.16 suggestion service accepts (besides random_state = tuning.seed).
ALGORITHM_SETTINGS: dict[str, frozenset[str]] = {
    "random": frozenset(),
    "tpe": frozenset({"gamma", "prior_weight", "n_EI_candidates"}),
    "multivariate-tpe": frozenset({"n_startup_trials", "n_ei_candidates"}),
    "grid": frozenset(),
    "bayesianoptimization": frozenset(
        {"base_estimator", "n_initial_points", "acq_func", "acq_optimizer"}
    ),
}


class SearchParameter(_Section):
    """One tuned hyperparameter, named after its TrainingConfig field.

    Types are Katib's: double and int take min/max (and step), discrete takes numbers, categorical
    takes strings (hidden_units as "64,32"). Katib 0.16's feasibleSpace has no distribution field
    (it came in 0.18), so log_scale turns a double into a discrete geometric grid of log_points.
    """

    type: Literal["double", "int", "discrete", "categorical"]
    min: float | None = None
    max: float | None = None
    step: float | None = Field(None, gt=0)
    values: list[int | float | str] | None = None
    log_scale: bool = False
    log_points: int = Field(7, ge=2, description="grid size of a log_scale parameter")

    @model_validator(mode="after")
    def _space_fits_the_type(self) -> SearchParameter:
        if self.type in ("double", "int"):
            if self.min is None or self.max is None or not self.min < self.max:
                raise ValueError(f"a {self.type} parameter needs min < max")
            if self.values is not None:
                raise ValueError(f"a {self.type} parameter takes min/max, not values")
            if self.type == "int" and not (
                float(self.min).is_integer() and float(self.max).is_integer()
            ):
                raise ValueError("an int parameter needs whole min and max")
            if self.log_scale and (self.type != "double" or self.min <= 0):
                raise ValueError("log_scale needs a double parameter with min > 0")
        else:
            if not self.values:
                raise ValueError(f"a {self.type} parameter needs a non-empty values list")
            if self.min is not None or self.max is not None or self.log_scale:
                raise ValueError(f"a {self.type} parameter takes values, not min/max/log_scale")
            if self.type == "discrete" and any(isinstance(v, str) for v in self.values):
                raise ValueError("discrete values are numbers (use categorical for strings)")
        return self


def _default_search_space() -> dict[str, SearchParameter]:
    return {
        "learning_rate": SearchParameter(
            type="double", min=0.0003, max=0.03, log_scale=True, log_points=5
        ),  # the grids hold training's defaults (0.003, 0.001, 8): the first trial can run them
        "dropout": SearchParameter(type="double", min=0.05, max=0.5),
        "l2": SearchParameter(type="double", min=1e-5, max=1e-2, log_scale=True, log_points=7),
        "embedding_dim": SearchParameter(type="discrete", values=[4, 8, 16]),
    }


class TuningConfig(_Section):
    """The search, declared once: the Katib Experiment, the trial's flags and the Trainer's
    hyperparameters all derive from it (components/tuning)."""

    enabled: bool = Field(False, description="run the KatibTuner step before the Trainer")
    backend: Literal["local", "cluster"] = Field(
        "local", description="local: trials as subprocesses here; cluster: a Katib Experiment"
    )
    algorithm: Literal["random", "tpe", "multivariate-tpe", "grid", "bayesianoptimization"] = "tpe"
    algorithm_settings: dict[str, str | int | float] = Field(
        default_factory=dict,
        description="Katib's algorithmSettings by Katib's names (n_startup_trials, gamma, ...)",
    )
    objective_metric: Literal["auc"] = Field(
        "auc", description="maximized; each trial reports it on its held-out validation share"
    )
    goal: float | None = Field(None, gt=0, le=1, description="stop once a trial reaches this")
    max_trials: int = Field(8, ge=1)
    parallel_trials: int = Field(2, ge=1)
    max_failed_trials: int = Field(3, ge=1)
    trial_train_steps: int | None = Field(
        None, ge=1, description="steps per trial; None = training.train_steps"
    )
    validation_every: int = Field(
        5, ge=2, description="every n-th train example validates the trials, the rest train them"
    )
    early_stopping: Literal["none", "medianstop"] = "none"
    early_stopping_min_trials: int = Field(3, ge=1, description="medianstop min_trials_required")
    early_stopping_start_step: int = Field(4, ge=1, description="medianstop start_step (reports)")
    start_from_config: bool = Field(
        True, description="local backend: trial 1 runs training's values, so tuning never loses"
    )
    trial_timeout_s: int = Field(3600, ge=1)
    timeout_s: int = Field(6 * 3600, ge=60, description="the whole search")
    seed: int = Field(42, description="random_state of the suggestion algorithm")
    cleanup: bool = Field(True, description="cluster: delete the Experiment once read")
    search_space: dict[str, SearchParameter] = Field(default_factory=_default_search_space)

    @field_validator("search_space", mode="before")
    @classmethod
    def _over_the_default_space(cls, given: Any) -> Any:
        """`--set tuning.search_space.dropout.max=0.4` keeps the other parameters and dropout's
        other fields; `--set tuning.search_space.l2=null` takes l2 out of the search."""
        if not isinstance(given, dict):
            return given
        merged = {n: p.model_dump(exclude_unset=True) for n, p in _default_search_space().items()}
        for name, values in given.items():
            if values is None:
                merged.pop(name, None)
            elif isinstance(values, dict) and name in merged and "type" not in values:
                merged[name] = {**merged[name], **values}
            else:
                merged[name] = values
        return merged

    @field_validator("search_space")
    @classmethod
    def _names_are_hyperparameters(
        cls, space: dict[str, SearchParameter]
    ) -> dict[str, SearchParameter]:
        tunable = set(TrainingConfig.model_fields) - NOT_TUNABLE
        unknown = sorted(set(space) - tunable)
        if unknown:
            raise ValueError(f"{unknown} are not tunable training fields; use {sorted(tunable)}")
        if not space:
            raise ValueError("an empty search space has nothing to tune")
        return space

    @model_validator(mode="after")
    def _algorithm_accepts_the_space(self) -> TuningConfig:
        if self.algorithm == "grid":
            sizes = []
            for name, p in self.search_space.items():
                if p.type == "double" and not p.log_scale and p.step is None:
                    raise ValueError(f"search_space.{name}: grid needs a step for a double")
                if p.log_scale:
                    sizes.append(p.log_points)
                elif p.type in ("double", "int"):
                    sizes.append(int((p.max - p.min) / (p.step or 1) + 1e-9) + 1)
                else:
                    sizes.append(len(p.values))
            combinations = math.prod(sizes)
            if self.max_trials > combinations:  # Katib's grid service refuses this too
                raise ValueError(
                    f"max_trials {self.max_trials} > all {combinations} grid combinations"
                )
        if self.algorithm == "bayesianoptimization":
            # Katib 0.16's skopt service gives every double a log-uniform prior.
            for name, p in self.search_space.items():
                if p.type == "double" and not p.log_scale and p.min <= 0:
                    raise ValueError(
                        f"search_space.{name}: bayesianoptimization (skopt, log-uniform "
                        "doubles in Katib 0.16) needs min > 0"
                    )
        allowed = ALGORITHM_SETTINGS[self.algorithm]
        unknown = sorted(set(self.algorithm_settings) - allowed)
        if unknown:
            raise ValueError(
                f"algorithm_settings {unknown}: {self.algorithm} takes {sorted(allowed) or 'none'}"
                " (random_state comes from tuning.seed)"
            )
        if self.parallel_trials > self.max_trials:
            raise ValueError("parallel_trials is more than max_trials")
        return self


class DistributionConfig(_Section):
    """How the Trainer spreads training over devices and workers (components/distribution.py)."""

    strategy: Literal["default", "mirrored", "multi_worker", "tpu", "auto"] = Field(
        "default", description="auto = TPU if addressed, TF_CONFIG workers, GPUs, else one device"
    )
    steps_per_execution: int = Field(1, ge=1, description="steps per tf.function call")
    tpu_address: str | None = Field(None, description="grpc://host:8470 or a TPU name")
    backup: bool = Field(True, description="BackupAndRestore under the model run dir")
    cache_examples: bool = Field(
        False, description="parse the train TFRecords once into memory (when they fit)"
    )
    workers: int = Field(
        2, ge=2, description="multi_worker on Kubeflow: TFJob workers (Trainer's resources each)"
    )
    job_timeout_s: int = Field(6 * 3600, ge=60, description="how long the Trainer waits for it")


class EvaluationConfig(_Section):
    """TFMA thresholds that bless a model."""

    min_auc: float = Field(0.70, ge=0, le=1)
    max_auc_drop: float = Field(
        0.01, ge=0, description="allowed AUC loss vs the latest blessed model"
    )
    min_slice_auc: float | None = Field(
        0.70, ge=0, le=1, description="bar for every slice (e.g. each device); None = overall only"
    )
    compare_with_blessed_baseline: bool = True
    slice_features: list[str] = Field(default_factory=lambda: ["device"])


class PusherConfig(_Section):
    """Which blessed models the Pusher may make the newest serving version (components/pusher.py).

    Each pushed version records the span its model was trained on; a model trained on an older
    span than the serving version's is not pushed, unless this run is an explicit rollback to it.
    """

    rollback_to_span: int | None = Field(
        None,
        ge=1,
        description="an explicit rollback: train on this span (data.span must equal it) and push "
        "its model as the newest version over one trained on newer data; the Evaluator then "
        "checks the absolute thresholds only (`shop-pipeline rollback --to-span N` sets both). "
        "None = never push a model trained on an older span than the serving version's",
    )


class ServingConfig(_Section):
    """The model server (serving/), its KServe InferenceService and the local A/B split."""

    model_name: str = Field(
        "shop-ranking", description="URL name (/v1/models/<name>) and the InferenceService's name"
    )
    max_instances: int = Field(
        1000, ge=1, description="the most instances one request may carry (413 above it)"
    )
    max_string_length: int = Field(
        256,
        ge=1,
        description="characters a string feature without a domain (user_id, product_id) may "
        "have (400 above it); a feature with a domain is bounded by its longest value",
    )
    max_concurrency: int = Field(
        16,
        ge=1,
        description="predictions one server admits at once; one more is answered 503 with "
        "Retry-After at once, so the admitted keep their latency (>= scale_target)",
    )
    retry_after_s: int = Field(1, ge=0, description="the Retry-After header of a 503")
    batch_max_size: int = Field(
        64, ge=1, description="instances of concurrent requests merged into one call; 1 = off"
    )
    batch_timeout_ms: float = Field(
        0.0, ge=0, description="extra wait for more requests; 0 = batch only what queued up"
    )
    reload_interval_s: float = Field(
        2.0, gt=0, description="how often the server looks for a newer pushed version"
    )
    log_requests: bool = Field(True, description="one JSON line per prediction (request_log_path)")
    ab_candidate_percent: int = Field(
        0, ge=0, le=100, description="local A/B: share of users sent to the newest version"
    )
    ab_key: str = Field("user_id", description="request field whose hash assigns an A/B variant")
    # KServe (manifests/kserve/, and the manifest Pusher writes next to each pushed version)
    namespace: str = Field("kubeflow", description="namespace of the InferenceService")
    image: str = Field(
        "shop-ranking-serving:0.1.0", description="the predictor image (serving/Dockerfile)"
    )
    tf_serving_version: str = Field(
        "2.16.1", description="runtimeVersion of KServe's TensorFlow runtime (TF Serving)"
    )
    storage_uri: str | None = Field(
        None, description="where KServe reads the pushed versions; None = the PVC's serving_dir"
    )
    service_account: str | None = Field(
        None,
        description="the predictors' ServiceAccount: for an s3:// storage URI it names the Secret "
        "with the keys and endpoint KServe's storage initializer reads (manifests/kfp)",
    )
    canary_traffic_percent: int = Field(
        10, ge=0, le=100, description="share of traffic a newly pushed version gets at first"
    )
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(4, ge=1)
    scale_metric: Literal["concurrency", "rps", "cpu", "memory"] = "concurrency"
    scale_target: int = Field(8, ge=1, description="per replica, in scale_metric's unit")
    cpu: float = Field(1, gt=0, description="predictor CPU request (limit: twice)")
    memory_gb: float = Field(2, gt=0, description="predictor memory request and limit")

    @model_validator(mode="after")
    def _replicas_in_order(self) -> ServingConfig:
        if self.max_replicas < self.min_replicas:
            raise ValueError("max_replicas must be >= min_replicas")
        if self.scale_metric == "concurrency" and self.max_concurrency < self.scale_target:
            raise ValueError(
                f"max_concurrency {self.max_concurrency} is below scale_target "
                f"{self.scale_target}: a replica would shed requests before KServe scales out"
            )
        if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", self.model_name):
            raise ValueError(f"model_name {self.model_name!r}: a DNS-1123 label (lowercase, '-')")
        return self


# The model server's flags that come from the serving section, in one list: `shop-serve start`,
# the tests and the InferenceService manifests all pass them (serving/server.py parses them).
SERVER_FLAG_FIELDS = (
    "max_instances",
    "max_string_length",
    "max_concurrency",
    "retry_after_s",
    "batch_max_size",
    "batch_timeout_ms",
    "reload_interval_s",
)


def number_text(value: float) -> str:
    """1.0 -> "1", 0.5 -> "0.5": flag values and Kubernetes quantities alike."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def server_flags(values: Mapping[str, Any]) -> list[str]:
    """`--max-instances=1000`, ... for the SERVER_FLAG_FIELDS in `values`."""
    return [
        f"--{name.replace('_', '-')}={number_text(values[name])}" for name in SERVER_FLAG_FIELDS
    ]


class MonitoringConfig(_Section):
    """The drift monitor on the request log and the retraining trigger (monitoring/)."""

    window_minutes: float = Field(
        60, gt=0, description="each check reads this much of the request log, ending now"
    )
    min_window_rows: int = Field(
        500, ge=1, description="fewer predictions than this: the window is reported, not judged"
    )
    retrain_on_drifted_features: int = Field(
        1,
        ge=1,
        description="retrain when this many features cross the schema's skew or drift thresholds",
    )
    min_live_auc: float | None = Field(
        0.70, ge=0, le=1, description="retrain when the live AUC of labelled traffic falls below"
    )
    max_calibration_error: float | None = Field(
        0.30, gt=0, description="retrain when |mean score / purchase rate - 1| exceeds this"
    )
    max_prediction_shift: float | None = Field(
        None,
        gt=0,
        description="Jensen-Shannon distance of the score histogram vs the previous window; "
        "None = reported only",
    )
    min_labelled: int = Field(
        300, ge=1, description="outcomes needed before live AUC and calibration count"
    )
    min_positives: int = Field(10, ge=1, description="purchases needed for a live AUC")
    max_outcome_rate_ratio: float | None = Field(
        2.0,
        gt=1,
        description="retrain when the purchase rate of the window's settled impressions (min_labelled "
        "of them) is more than this many times the serving model's training rate, or less than "
        "1/this; None = reported only",
    )
    retrain: Literal["off", "local", "kubeflow"] = Field(
        "local", description="what a crossing starts: shop-pipeline run here, or a KFP run"
    )
    confirm_windows: int = Field(
        2, ge=1, description="judged windows in a row with a signal before a crossing counts"
    )
    retrain_cooldown_hours: float | None = Field(
        24,
        gt=0,
        description="no two retrains closer than this; a crossing that persists (retrain failed "
        "or not blessed) retrains again after it. None = once per crossing, ever",
    )
    outcomes_dir: str | None = Field(
        None, description="the delayed outcome feed (CSV per span); None = <data.root>/outcomes"
    )
    root: str | None = Field(
        None,
        description="request logs and the monitor's history, local files (on Kubeflow the PVC); "
        "None = output_root",
    )
    pushgateway: str | None = Field(
        None, description="push the monitor's metrics to this Prometheus Pushgateway"
    )
    schedule: str = Field(
        "15 * * * *", description="the monitor CronJob's schedule (manifests/monitoring)"
    )


class StepResources(_Section):
    """Requests/limits of one pipeline step's pod on Kubeflow (ignored by the local runner)."""

    cpu: float | None = Field(None, gt=0, description="CPU request and limit, in cores")
    memory_gb: float | None = Field(None, gt=0, description="memory request and limit, in GB")
    accelerator_type: str | None = Field(
        None, description="Kubernetes resource name, e.g. nvidia.com/gpu (open-source KFP)"
    )
    accelerator_count: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _accelerator_needs_both(self) -> StepResources:
        if bool(self.accelerator_type) != (self.accelerator_count > 0):
            raise ValueError("accelerator_type and accelerator_count are set together")
        return self


DEFAULT_RESOURCES: dict[str, dict[str, Any]] = {
    "CsvExampleGen": {"cpu": 2, "memory_gb": 8},
    "BaselineExampleGen": {"cpu": 2, "memory_gb": 8},
    "StatisticsGen": {"cpu": 2, "memory_gb": 8},
    "BaselineStatisticsGen": {"cpu": 2, "memory_gb": 8},
    "Transform": {"cpu": 4, "memory_gb": 16},
    "KatibTuner": {"cpu": 4, "memory_gb": 16},  # local backend; the cluster backend's trial pods
    "Trainer": {"cpu": 4, "memory_gb": 16},  #   get the Trainer's resources instead
    "Evaluator": {"cpu": 2, "memory_gb": 8},
}


class KubeflowConfig(_Section):
    """How `shop-pipeline compile/submit` target Kubeflow Pipelines v2 (open source)."""

    image: str = Field(
        "shop-ranking:0.1.0", description="the image every step runs (built from the Dockerfile)"
    )
    package_path: str = Field(
        "outputs/kubeflow/shop-ranking.yaml", description="where `compile` writes the KFP YAML"
    )
    pvc_name: str | None = Field(
        None, description="PersistentVolumeClaim mounted into every step (data, artifacts, models)"
    )
    pvc_mount_path: str = "/mnt/shop"
    host: str | None = Field(None, description="KFP API endpoint for `submit`")
    namespace: str = Field("kubeflow", description="KFP namespace (multi-user: the profile)")
    experiment: str = "shop-ranking"
    resources: dict[str, StepResources] = Field(
        default_factory=lambda: dict(DEFAULT_RESOURCES),
        validate_default=True,
        description="per step (component id); given fields override DEFAULT_RESOURCES's",
    )

    @field_validator("resources", mode="before")
    @classmethod
    def _over_the_defaults(cls, given: Any) -> Any:
        """`--set kubeflow.resources.Trainer.accelerator_count=1` keeps Trainer's CPU/memory and
        every other step's defaults."""
        if not isinstance(given, dict):
            return given
        merged = {name: dict(values) for name, values in DEFAULT_RESOURCES.items()}
        for name, values in given.items():
            if isinstance(values, dict):
                merged[name] = {**merged.get(name, {}), **values}
            else:
                merged[name] = values
        return merged


class PipelineConfig(_Section):
    """Everything a run needs; the same object feeds create_pipeline() and every runner."""

    name: str = "shop-ranking"
    output_root: str = "outputs"
    enable_cache: bool = True
    data: DataConfig = DataConfig()
    beam: BeamConfig = BeamConfig()
    object_store: ObjectStoreConfig = ObjectStoreConfig()
    validation: ValidationConfig = ValidationConfig()
    transform: TransformConfig = TransformConfig()
    training: TrainingConfig = TrainingConfig()
    tuning: TuningConfig = TuningConfig()
    distribution: DistributionConfig = DistributionConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    pusher: PusherConfig = PusherConfig()
    kubeflow: KubeflowConfig = KubeflowConfig()
    serving: ServingConfig = ServingConfig()
    monitoring: MonitoringConfig = MonitoringConfig()

    @model_validator(mode="after")
    def _name_is_a_pipeline_name(self) -> PipelineConfig:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", self.name):
            raise ValueError(f"name {self.name!r}: use lowercase letters, digits and '-'")
        return self

    @model_validator(mode="after")
    def _rollback_trains_on_its_span(self) -> PipelineConfig:
        rollback = self.pusher.rollback_to_span
        if rollback is not None and self.data.span != rollback:
            raise ValueError(
                f"pusher.rollback_to_span={rollback} pushes a model trained on span {rollback}: "
                f"set data.span={rollback} too (data.span is {self.data.span}); "
                f"`shop-pipeline rollback --to-span {rollback}` sets both"
            )
        return self

    # Paths derived from output_root, so one setting moves a whole run. Joined as strings: a
    # pathlib.Path would turn gs://bucket into gs:/bucket.
    def _under_output_root(self, *parts: str) -> str:
        return "/".join([self.output_root.rstrip("/"), *parts])

    def uses_s3(self) -> bool:
        return any(p.startswith("s3://") for p in (self.output_root, self.data.root))

    def beam_pipeline_args(self) -> list[str]:
        """Beam's arguments for every Beam stage: the runner's, plus the S3 options when a path
        is on s3://."""
        return self.beam.pipeline_args() + (self.object_store.beam_args() if self.uses_s3() else [])

    @property
    def pipeline_root(self) -> str:
        return self._under_output_root("pipeline_root", self.name)

    @property
    def metadata_path(self) -> str:
        return self._under_output_root("metadata.sqlite")

    @property
    def serving_dir(self) -> str:
        return self._under_output_root("serving", self.name)

    @property
    def request_log_path(self) -> str:
        """The model server's prediction log (JSON lines), read by the monitor."""
        return "/".join([self.request_log_dir, f"{self.serving.model_name}.jsonl"])

    @property
    def request_log_dir(self) -> str:
        """Every prediction log of the model (one file per server process or pod)."""
        return "/".join([self._monitoring_root(), "serving_logs"])

    @property
    def monitoring_dir(self) -> str:
        """The monitor's history: one report per window, the trigger's state, metrics."""
        return "/".join([self._monitoring_root(), "monitoring", self.serving.model_name])

    def _monitoring_root(self) -> str:
        return (self.monitoring.root or self.output_root).rstrip("/")

    @property
    def outcomes_dir(self) -> str:
        return self.monitoring.outcomes_dir or "/".join([self.data.root.rstrip("/"), "outcomes"])

    @property
    def kserve_manifest_dir(self) -> str:
        """Where Pusher writes the InferenceService for the version it pushed."""
        return self._under_output_root("kserve")

    @property
    def summary_path(self) -> str:
        return self._under_output_root("run_summary.json")

    def trainer_pod(self) -> dict[str, Any]:
        """The pods that train outside the Trainer's own (TFJob workers, Katib trials): the
        image, namespace and PVC every step uses, the Trainer's resources
        (components.tfjob.TFJobSettings fields)."""
        resources = self.kubeflow.resources.get("Trainer") or StepResources()
        return {
            "image": self.kubeflow.image,
            "namespace": self.kubeflow.namespace,
            "cpu": resources.cpu,
            "memory_gb": resources.memory_gb,
            "accelerator_type": resources.accelerator_type,
            "accelerator_count": resources.accelerator_count,
            "pvc_name": self.kubeflow.pvc_name,
            "mount_path": self.kubeflow.pvc_mount_path,
            **(self._object_store_pod_env() if self.uses_s3() else {}),
        }

    def _object_store_pod_env(self) -> dict[str, Any]:
        """What a trial or worker pod needs to read and write s3:// (as every step gets it)."""
        store = self.object_store
        secret = store.credentials_secret
        return {
            "env": {"TF_USE_LEGACY_KERAS": "1", **store.environment()},
            "secret_env": {
                variable: {"name": secret, "key": key}
                for variable, key in store.key_variables().items()
            }
            if secret
            else {},
        }


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the field."""


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {key!r} is not a section")
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`training.train_steps=100` -> ("training.train_steps", 100); values are YAML scalars/lists."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    return key.strip(), yaml.safe_load(raw) if raw.strip() else None


def load_config(
    env_or_path: str | Path = "local", overrides: list[str] | dict[str, Any] | None = None
) -> PipelineConfig:
    """Loads settings/conf/<env>.yaml (or a path) and applies overrides; errors name the file and field."""
    path = Path(env_or_path)
    if not path.suffix:
        path = CONF_DIR / f"{env_or_path}.yaml"
    if not path.exists():
        raise ConfigError(
            f"config file {path} not found (available: {sorted(p.stem for p in CONF_DIR.glob('*.yaml'))})"
        )
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    items = (
        overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides or [])
    )
    for key, value in items:
        _set_dotted(tree, key, value)
    try:
        return PipelineConfig.model_validate(tree)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e.get('input')!r})"
            if e["loc"]
            # a check across sections (PipelineConfig's validators): its message names the fields
            else e["msg"].removeprefix("Value error, ")
            for e in err.errors()
        )
        raise ConfigError(f"{path}: {problems}") from err
