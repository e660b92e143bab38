"""The pipeline definition (create_pipeline), its typed config, and thin runners.

Importing it changes nothing in the process; `shop-pipeline` (pipelines.cli) sets TensorFlow up
(components.runtime.prepare_tensorflow_process) before it imports anything that loads it.
"""
