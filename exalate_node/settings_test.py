"""Settings for the test suite: a development node with its own var/ and pipeline tasks run inline.

Service-backed runs still come from the environment (DATABASE_URL, REDIS_URL).
"""

import os
import tempfile

os.environ.setdefault("DEBUG", "true")
os.environ.setdefault("TASKS_INLINE", "true")
# A var/ of its own per test run: concurrent runs must not share the SQLite test database.
os.environ.setdefault("VAR_DIR", tempfile.mkdtemp(prefix="exalate-node-test-"))
# The suite logs in many times a minute from one address; tests of the limit set their own rate.
os.environ.setdefault("API_TOKEN_RATE", "100000/minute")
os.environ.setdefault("LOGIN_FAILURE_LIMIT", "100000")
os.environ.setdefault("MEDIA_ROOT", os.path.join(os.environ["VAR_DIR"], "media"))

from exalate_node.settings import *  # noqa: E402,F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
