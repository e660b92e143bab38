"""The data gate's section (validation): which anomalies stop the run before Transform."""

from __future__ import annotations

from pydantic import Field

from settings.section import Section


class ValidationConfig(Section):
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
        "TFDV passes over the data that nothing in this pipeline reads (docs/benchmarks.md)",
    )
