"""The local connection of the pipeline tests, for the sandbox's pipeline tests."""

from tests.replicas.conftest import local_pair  # noqa: F401
