"""Seeded simulator of an online shop's impression log, with a known ground truth.

The shop writes one folder per day (`span-1`, `span-2`, ...). Every row is one product shown to one
user; `purchased` is drawn from a hidden logistic model of the observed columns, so the Bayes-optimal
AUC (the best any model can reach on that data) is known for every span.
"""

from simulator.generate import SimulationOptions, SpanReport, generate_span, write_dataset

__all__ = ["SimulationOptions", "SpanReport", "generate_span", "write_dataset"]
