"""The Pusher's section: which blessed models may become the newest serving version."""

from __future__ import annotations

from pydantic import Field

from settings.section import Section


class PusherConfig(Section):
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
