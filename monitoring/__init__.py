"""Drift and quality monitoring of served traffic, and the retraining trigger that closes the loop.

traffic  - the request log's windows and the delayed outcomes that arrived for them
checks   - TFDV skew (vs the serving model's training statistics) and drift (vs the previous
           window) with the curated schema's comparators; prediction distribution; live quality
trigger  - thresholds -> a crossing, confirmed over windows, fired once (state on disk)
retrain  - what a firing starts: the local pipeline, or a run through the KFP client
monitor  - one check: read, compare, report, decide, retrain
report   - the JSON report and its HTML view with plots;  metrics - Prometheus text/pushgateway
scenario - the whole loop on this machine (train, serve, drift, detect, retrain, push)
"""
