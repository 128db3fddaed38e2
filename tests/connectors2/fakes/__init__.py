"""Contract-checked in-memory fakes of the Connectors II trackers."""
