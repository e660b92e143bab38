"""Code that runs inside pipeline steps: features, preprocessing_fn, model, run_fn, custom components.

Referenced by import path (e.g. `components.preprocessing.preprocessing_fn`), so the same code runs in
a local process and in a Kubeflow pod that has this package installed. Importing it changes nothing
in the process: entry points set TensorFlow up with components.runtime.prepare_tensorflow_process.
"""
