"""Test-wide environment: a development node with its own var/ and tasks run inline."""

import os
import tempfile

os.environ.setdefault("DEBUG", "true")
os.environ.setdefault("TASKS_INLINE", "true")
os.environ.setdefault("VAR_DIR", os.path.join(tempfile.gettempdir(), f"exalate-node-test-{os.getuid()}"))
os.environ.setdefault("MEDIA_ROOT", os.path.join(os.environ["VAR_DIR"], "media"))
