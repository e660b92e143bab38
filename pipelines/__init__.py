"""The pipeline definition (create_pipeline), its typed config, and thin runners."""

import os

# TFX 1.16 is built for Keras 2: make tf.keras resolve to tf_keras before TensorFlow is imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
