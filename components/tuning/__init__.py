"""Hyperparameter tuning with Katib: the search space declared once in TuningConfig becomes the
Katib Experiment (experiment.py), the trial's flags (trial.py) and the Trainer's hyperparameters
(the KatibTuner component's HyperParameters artifact). Backends: local subprocess trials with
Katib's suggestion libraries (local_backend.py) or a Katib Experiment on the cluster
(cluster_backend.py)."""
