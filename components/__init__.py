"""Code that runs inside pipeline steps: features, preprocessing_fn, model, run_fn, custom components.

Referenced by import path (e.g. `components.preprocessing.preprocessing_fn`), so the same code runs in
a local process and in a Kubeflow pod that has this package installed.
"""

import os

# TFX 1.16 is built for Keras 2: make tf.keras resolve to tf_keras before TensorFlow is imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
