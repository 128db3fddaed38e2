"""The built-in tracker: a small, real issue store in the node's own database."""
