"""Placeholder: helper rewriting the KServe push configuration replaces this module."""

from serving.kserve_manifest import pusher_custom_config  # noqa: F401  (to be replaced)
