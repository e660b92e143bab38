"""The sections of the model's training: feature sizes (transform), hyperparameters (training),
devices and workers (distribution) and the blessing thresholds (evaluation).

Each crosses process boundaries as itself: the Trainer's custom_config, the worker's and the
trial's flags carry `model_dump(mode="json")`, and the other side validates it again.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from settings.section import Section


class TransformConfig(Section):
    """Feature engineering sizes, passed to preprocessing_fn as custom_config."""

    user_hash_buckets: int = Field(2000, ge=1)
    product_hash_buckets: int = Field(1000, ge=1)
    price_buckets: int = Field(10, ge=2)
    cross_hash_buckets: int = Field(200, ge=1)


class TrainingConfig(Section):
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


class DistributionConfig(Section):
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


class EvaluationConfig(Section):
    """TFMA thresholds that bless a model."""

    min_auc: float = Field(0.70, ge=0, le=1)
    max_auc_drop: float = Field(
        0.01, ge=0, description="allowed AUC loss vs the latest blessed model"
    )
    min_slice_auc: float | None = Field(
        0.70, ge=0, le=1, description="bar for every slice (e.g. each device); None = overall only"
    )
    ndcg_k: int = Field(10, ge=1, le=100, description="list length of the ranking metric NDCG@k")
    min_ndcg: float = Field(
        0.55,
        ge=0,
        le=1,
        description="bar for NDCG@k per request (random order scores about 0.50 on 10-product pages)",
    )
    max_ndcg_drop: float = Field(
        0.03, ge=0, description="allowed NDCG@k loss vs the latest blessed model"
    )
    compare_with_blessed_baseline: bool = True
    slice_features: list[str] = Field(default_factory=lambda: ["device"])
