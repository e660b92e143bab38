"""Sticky A/B assignment: a user stays in one variant for the whole test.

KServe's canaryTrafficPercent splits requests at random at the ingress, which is right for a
rollout but mixes one user's sessions across both models. For an A/B test of two model versions the
local server splits by a stable hash of a request field (user_id by default) instead.
"""

from __future__ import annotations

import hashlib

CONTROL = "control"
CANDIDATE = "candidate"


def bucket(key: object) -> int:
    """0..99, the same on every machine and every run (no Python hash randomisation)."""
    digest = hashlib.sha256(str(key).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % 100


def variant(key: object, candidate_percent: int) -> str:
    return CANDIDATE if bucket(key) < candidate_percent else CONTROL
