"""In-memory fakes of the trackers' REST APIs that keep to the official API descriptions.

Each fake is a ``requests`` transport adapter (``ContractFake``): mounted on the session an ``HttpClient``
uses, it answers from in-memory state, and checks every request the connector sends and every response it
gives against the tracker's OpenAPI description (``tests/contracts``) with ``openapi-core``. A request the
real service would reject fails the test (``ContractViolation``); so does a response the real service could
not send, which keeps the fake honest.
"""
