"""The model server for the pushed SavedModel (KServe ModelServer: V1 + V2 REST) and its tools.

It runs in its own environment (serving/requirements.lock: TensorFlow + kserve, no TFX). The
modules that do not import TensorFlow or kserve (contract, ab, request_log, ab_report, loadgen)
are also used from the pipeline's environment.
"""
