"""The admin UI: server-rendered pages for staff over the same services as the API (mounted at /ui/)."""
