"""Where the checkout is: the tests read its files (manifests, notebooks, golden spec) by path."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
