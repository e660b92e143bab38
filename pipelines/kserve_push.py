"""The Pusher's KServe custom_config: which renderer writes each pushed version's
InferenceServices, where, and the config they are rendered from.

The renderer (serving/kserve_manifest.py) lives in a layer above this one, so it is named by its
dotted path, the way create_pipeline() names run_fn and preprocessing_fn; the Pusher imports it in
its own step. What would make it fail there is checked here, at compile time, with the same
derivations it uses (settings/kserve.py).
"""

from __future__ import annotations

import os
from typing import Any

from components.pusher import (
    KSERVE_CONFIG_KEY,
    KSERVE_KEY,
    KSERVE_MANIFEST_DIR_KEY,
    KSERVE_RENDER_KEY,
)
from settings import PipelineConfig
from settings import kserve as kserve_settings

# serving.kserve_manifest.write_pushed_version(manifest_dir, config, model_version,
# previous_version, write): what the Pusher calls after each push.
RENDER = "serving.kserve_manifest.write_pushed_version"


def pusher_custom_config(config: PipelineConfig) -> dict[str, Any] | None:
    """Pusher's custom_config (create_pipeline): the renderer, where to write the
    InferenceServices of each version it pushes (kserve_manifest_dir, on the PVC or the object
    store on Kubeflow) and the whole config as JSON (the Pusher validates it again). None where
    nothing could give KServe the model (a local run: no serving.storage_uri, no PVC, a local
    output_root): then Pusher writes none. Other problems (output_root outside the PVC's mount,
    a model name too long) are a ConfigError naming the fields."""
    if not kserve_settings.has_model_source(config):
        return None
    kserve_settings.check(config)
    directory = config.kserve_manifest_dir
    return {
        KSERVE_KEY: {
            KSERVE_RENDER_KEY: RENDER,
            # absolute, as TFX records every local path
            KSERVE_MANIFEST_DIR_KEY: directory
            if "://" in directory
            else os.path.abspath(directory),
            KSERVE_CONFIG_KEY: config.model_dump(mode="json"),
        }
    }
