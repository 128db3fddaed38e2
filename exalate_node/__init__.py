"""exalate-node: a self-hosted two-way sync node for issue trackers."""

__version__ = "0.1.0"
