"""Strategy selection for each mode that can be built here; GPU and TPU modes up to the point where
hardware is needed, where they must fail with a message saying what is missing."""

import json

import pytest
import tensorflow as tf

from components import distribution as D


@pytest.fixture
def no_cluster(monkeypatch):
    for name in ("TF_CONFIG", "TPU_NAME"):
        monkeypatch.delenv(name, raising=False)


def two_workers(index: int = 0) -> str:
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    return json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})


def test_default_is_one_device_and_batches_are_per_replica(no_cluster):
    strategy = D.make_strategy("default")
    assert strategy.num_replicas_in_sync == 1
    assert D.global_batch_size(64, strategy) == 64


def test_auto_picks_what_the_machine_has(no_cluster, monkeypatch):
    assert D.resolve("auto") == "default"  # this machine: CPU only, no cluster
    monkeypatch.setenv("TF_CONFIG", two_workers())
    assert D.resolve("auto") == "multi_worker"
    assert D.resolve("auto", tpu_address="grpc://10.0.0.2:8470") == "tpu"


def test_unknown_strategy_is_named():
    with pytest.raises(D.DistributionError, match="'gpu'"):
        D.resolve("gpu")


@pytest.mark.skipif(bool(tf.config.list_physical_devices("GPU")), reason="machine has a GPU")
def test_mirrored_without_gpus_says_so(no_cluster):
    with pytest.raises(D.DistributionError, match="mirrored.*none"):
        D.make_strategy("mirrored")


def test_multi_worker_needs_tf_config_with_workers(no_cluster, monkeypatch):
    with pytest.raises(D.DistributionError, match="TF_CONFIG listing two or more workers"):
        D.make_strategy("multi_worker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(D.DistributionError, match="TF_CONFIG is not JSON"):
        D.worker_count()


def test_chief_is_worker_zero_or_the_chief_task(no_cluster, monkeypatch):
    assert D.is_chief()
    monkeypatch.setenv("TF_CONFIG", two_workers(1))
    assert not D.is_chief() and D.worker_count() == 2
    monkeypatch.setenv("TF_CONFIG", two_workers(0))
    assert D.is_chief()
    monkeypatch.setenv(
        "TF_CONFIG",
        json.dumps(
            {
                "cluster": {"chief": ["h:1"], "worker": ["h:2"]},
                "task": {"type": "worker", "index": 0},
            }
        ),
    )
    assert not D.is_chief() and D.worker_count() == 2


def test_tpu_without_a_tpu_fails_fast_and_says_what_is_missing(no_cluster):
    with pytest.raises(D.DistributionError, match="nothing answers at grpc://127.0.0.1:1"):
        D.make_strategy("tpu", tpu_address="grpc://127.0.0.1:1")
    with pytest.raises(D.DistributionError, match="no TPU here"):
        D.make_strategy("tpu")


def test_datasets_are_sharded_by_data_explicitly():
    dataset = D.shard_by_data(tf.data.Dataset.range(4))
    policy = dataset.options().experimental_distribute.auto_shard_policy
    assert policy == tf.data.experimental.AutoShardPolicy.DATA
