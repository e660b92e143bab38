"""tf.distribute strategy chosen by configuration, not by editing code.

`default`: one device. `mirrored`: every local GPU. `multi_worker`: MultiWorkerMirroredStrategy over
the workers TF_CONFIG lists. `tpu`: TPUStrategy on the TPU named by an address or the environment.
`auto`: what the machine has (TPU address given > TF_CONFIG with several workers > several GPUs >
one device). Each mode that needs hardware fails with a message saying what is missing.
"""

from __future__ import annotations

import glob
import json
import os
import socket
from typing import Any, get_args

import tensorflow as tf

from settings import DistributionConfig

# The names distribution.strategy accepts, as the config declares them.
STRATEGIES: tuple[str, ...] = get_args(DistributionConfig.model_fields["strategy"].annotation)


class DistributionError(RuntimeError):
    """The configured strategy cannot run here; the message says what is missing."""


def tf_config() -> dict[str, Any] | None:
    """TF_CONFIG as a dict (what the Training Operator and our local launcher set), or None."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as err:
        raise DistributionError(f"TF_CONFIG is not JSON: {err}") from err
    if "cluster" not in config or "task" not in config:
        raise DistributionError(f"TF_CONFIG needs 'cluster' and 'task', got keys {sorted(config)}")
    return config


def worker_count() -> int:
    config = tf_config()
    if config is None:
        return 1
    cluster = config["cluster"]
    return len(cluster.get("chief", [])) + len(cluster.get("worker", []))


def is_chief() -> bool:
    """The one worker that writes the model: the chief, else worker 0, else the only process."""
    config = tf_config()
    if config is None:
        return True
    task = config["task"]
    if "chief" in config["cluster"]:
        return task.get("type") == "chief"
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0


def resolve(kind: str, *, tpu_address: str | None = None) -> str:
    """`auto` -> the concrete strategy for this machine; other names are checked and returned."""
    if kind not in STRATEGIES:
        raise DistributionError(
            f"distribution.strategy {kind!r}: expected one of {list(STRATEGIES)}"
        )
    if kind != "auto":
        return kind
    if tpu_address or os.environ.get("TPU_NAME"):
        return "tpu"
    if worker_count() > 1:
        return "multi_worker"
    if len(tf.config.list_physical_devices("GPU")) > 1:
        return "mirrored"
    return "default"


def make_strategy(kind: str, *, tpu_address: str | None = None) -> tf.distribute.Strategy:
    """Builds the strategy. Must run before any other TensorFlow op in a multi-worker process."""
    kind = resolve(kind, tpu_address=tpu_address)
    if kind == "default":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            raise DistributionError(
                "distribution.strategy 'mirrored' mirrors over local GPUs, and this machine has "
                "none visible to TensorFlow (tf.config.list_physical_devices('GPU') is empty); "
                "use 'default' or 'auto' on CPU"
            )
        return tf.distribute.MirroredStrategy()
    if kind == "multi_worker":
        if worker_count() < 2:
            raise DistributionError(
                "distribution.strategy 'multi_worker' needs TF_CONFIG listing two or more workers "
                "(set by the Training Operator's TFJob, or by components.local_workers)"
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    tpu = _reachable_tpu(tpu_address)
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as err:
        raise DistributionError(
            "distribution.strategy 'tpu': no TPU reachable at "
            f"{tpu_address or '(TPU_NAME / metadata)'}: {err}"
        ) from err
    return tf.distribute.TPUStrategy(resolver)


def _reachable_tpu(address: str | None) -> str:
    """Checks what can be checked before TensorFlow dials the TPU (it blocks for minutes on an
    address nobody answers): a grpc:// address must accept a connection; without an address a
    TPU name (TPU_NAME) or a TPU VM's own chips (/dev/accel*) must exist."""
    if address and address.startswith("grpc://"):
        host, _, port = address[len("grpc://") :].rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=5).close()
        except (OSError, ValueError) as err:
            raise DistributionError(
                f"distribution.strategy 'tpu': nothing answers at {address} ({err}); check "
                "distribution.tpu_address"
            ) from err
        return address
    if address:
        return address  # a TPU name, resolved by TPUClusterResolver
    if os.environ.get("TPU_NAME"):
        return os.environ["TPU_NAME"]
    if glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"):
        return "local"  # a TPU VM
    raise DistributionError(
        "distribution.strategy 'tpu': no TPU here (no distribution.tpu_address, no TPU_NAME, no "
        "/dev/accel* device); run on a TPU VM or give the TPU's grpc:// address"
    )


def global_batch_size(per_replica: int, strategy: tf.distribute.Strategy) -> int:
    """Batches are per replica in config: the global batch grows with the replicas (scale the
    learning rate with it, linearly for Adam as a starting point, when you add replicas)."""
    return per_replica * strategy.num_replicas_in_sync


def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Explicit auto-shard policy: each worker takes every n-th element. FILE sharding would need
    at least as many files as workers, which Transform's output does not promise."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)
