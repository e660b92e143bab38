"""The event stream's section: the broker the shop publishes to, the online store, the consumer.

The consumer writes into `data.root` (the lake the pipeline reads); Feast's registry lives under
output_root (PipelineConfig.feature_registry_path). Defaults are the loopback services that the
make targets and tests start (features/services.py); on Kubernetes they are the cluster's.
"""

from __future__ import annotations

from pydantic import Field

from settings.section import Section


class StreamConfig(Section):
    """Where the shop's events flow and how the consumer batches them (features/consumer.py)."""

    broker_url: str = Field(
        "amqp://guest:guest@127.0.0.1:5672/%2F", description="RabbitMQ (AMQP 0-9-1) URL"
    )
    exchange: str = Field("shop.events", description="the durable exchange the app publishes to")
    queue: str = Field("shop.events.lake", description="the consumers' shared durable queue")
    dead_letter_queue: str = Field(
        "shop.events.dead", description="messages outside the contract, with the reason"
    )
    redis: str = Field("127.0.0.1:6379", description="the online store (Feast's Redis), host:port")
    batch_size: int = Field(500, ge=1, description="messages written (and acknowledged) together")
    flush_interval_s: float = Field(
        0.25,
        gt=0,
        description="the longest a message waits in a consumer's batch before the batch is "
        "written (bounds the lag to the online store at low traffic)",
    )
    prefetch: int = Field(
        2000, ge=1, description="unacknowledged messages the broker hands one consumer"
    )
    seal_timeout_s: float = Field(
        120.0,
        gt=0,
        description="how long a seal waits for the events it counts before it seals what "
        "arrived and records the shortfall",
    )
