"""Default ("Basic mode") sync rules, used for every new connection side.

The scripts are deliberately plain so admins can learn the script API from them.
"""

from __future__ import annotations

TRACKER_TYPES = (
    "builtin",
    "redmine",
    "github",
    "jira",
    "gitlab",
    "zendesk",
    "servicenow",
    "azure",
    "salesforce",
)

DEFAULT_OUTGOING = """\
# Outgoing sync rules: decide what the other side receives.
# 'issue' is the local item, 'replica' is what gets sent.
replica.id = issue.id
replica.key = issue.key
replica.url = issue.url
replica.summary = issue.summary
replica.description = issue.description
replica.status = issue.status
replica.priority = issue.priority
replica.type = issue.type
replica.labels = issue.labels
replica.assignee = issue.assignee
replica.reporter = issue.reporter
replica.dueDate = issue.dueDate
replica.comments = issue.comments
replica.attachments = issue.attachments
replica.project = issue.project
replica.created = issue.created
replica.updated = issue.updated
"""

DEFAULT_INCOMING = """\
# Incoming sync rules: apply what the other side sent ('replica') to the local 'issue'.
# changed("field") is True on the first sync and whenever the other side changed that field
# since the last sync, so local edits to other fields are kept (field-level merge).
if changed("summary"):
    issue.summary = replica.summary
if changed("description"):
    issue.description = replica.description

# Statuses, priorities and types are matched by name (case-insensitive);
# a name unknown here keeps the current local value.
if changed("status"):
    issue.status = node_helper.get_status(replica.status, issue.status)
if changed("priority"):
    issue.priority = node_helper.get_priority(replica.priority, issue.priority)
if changed("type"):
    issue.type = node_helper.get_issue_type(replica.type, issue.type)

if changed("labels"):
    issue.labels = replica.labels
if changed("assignee"):
    # the local user with the same e-mail, or unassigned when there is none
    issue.assignee = node_helper.get_user(replica.assignee)
if changed("dueDate"):
    issue.dueDate = replica.dueDate

# Comments and attachments: add new ones, apply edits and deletions.
comment_helper.merge_comments(issue, replica)
attachment_helper.merge_attachments(issue, replica)
"""

# A tracker other than the built-in one writes every synced comment as the node's own account: the default
# rules say who wrote it at the start of the text ("[Anna <anna@example.com>] ...").
COMMENT_AUTHORS_IN_TEXT = (
    "comment_helper.merge_comments(issue, replica)",
    "# The tracker shows the node as the author: say who wrote the comment, at the start of its text.\n"
    "comment_helper.merge_comments(issue, replica, author_prefix=True)",
)


def default_rules(tracker_type: str) -> tuple[str, str]:
    """Return ``(outgoing, incoming)`` default scripts for a tracker type: the same for all, except that a
    tracker which cannot store a comment's author gets it written into the comment's text."""
    if tracker_type not in TRACKER_TYPES:
        raise ValueError(f"unknown tracker type {tracker_type!r}; expected one of {', '.join(TRACKER_TYPES)}")
    if tracker_type == "builtin":
        return DEFAULT_OUTGOING, DEFAULT_INCOMING  # it stores each comment's author
    return DEFAULT_OUTGOING, DEFAULT_INCOMING.replace(*COMMENT_AUTHORS_IN_TEXT)
