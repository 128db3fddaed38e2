"""ADF ↔ markdown-ish text: both round trips, and how unsupported nodes degrade.

Facts of Atlassian Document Format these tests rely on: a document is ``{"type": "doc", "version": 1,
"content": [...]}``; blocks are ``paragraph``, ``heading`` (``attrs.level`` 1-6), ``bulletList`` /
``orderedList`` (``attrs.order``) of ``listItem``, ``codeBlock`` (``attrs.language``), ``blockquote``,
``rule``, ``mediaSingle``, ``table``, ``panel``; inline nodes are ``text`` (with ``marks``: ``strong``,
``em``, ``strike``, ``code``, ``link`` with ``attrs.href``), ``hardBreak``, ``mention`` (``attrs.id``,
``attrs.text`` like ``@Anna``), ``emoji`` (``attrs.shortName``, ``attrs.text``) and ``inlineCard``
(``attrs.url``).
"""

from __future__ import annotations

from typing import Any

import pytest

from instances.connectors.adf import adf_to_text, is_adf, text_to_adf

TEXTS = [
    "Hello world",
    "Line one\nline two (a hard break)\n\nA second paragraph.",
    "**bold**, *italic*, ~~struck~~, `code` and [a link](https://example.com/a?b=1)",
    "[**bold link**](https://example.com) and *`code in em`*",
    "# Title\n\n## Subtitle\n\n###### Smallest",
    "- one\n- two\n  - nested\n  - nested too\n- three",
    "1. first\n2. second\n\n5. starts at five\n6. six",
    "- an item\n  that goes on\n- **bold** item",
    "```python\nprint('x')\n\nx = 1  # blank line inside\n```",
    "```\nno language\n```",
    "> quoted\n> still quoted\n\nafter",
    "above\n\n---\n\nbelow",
    "Ping @Anna Smith about 2 * 3 * 4 and snake_case_names",
    "Unicode: Grüße 😀 — ok",
]


@pytest.mark.parametrize("text", TEXTS)
def test_text_to_adf_to_text_is_the_same_text(text: str) -> None:
    doc = text_to_adf(text)
    assert is_adf(doc)
    assert adf_to_text(doc) == text


@pytest.mark.parametrize("text", TEXTS)
def test_adf_to_text_to_adf_is_the_same_document(text: str) -> None:
    doc = text_to_adf(text)
    assert text_to_adf(adf_to_text(doc)) == doc


def test_marks_are_a_set_so_their_nesting_is_normalised() -> None:
    # ADF keeps marks unordered on a text node; the text form writes them in one order (link outermost).
    assert adf_to_text(text_to_adf("**[bold link](https://x.io)**")) == "[**bold link**](https://x.io)"
    assert text_to_adf("**[bold link](https://x.io)**") == text_to_adf("[**bold link**](https://x.io)")


def test_the_document_has_the_expected_structure() -> None:
    doc = text_to_adf("# Hi\n\nSee [docs](https://x.io) and `f()`\nnext\n\n- a\n  - b\n\n```sh\nls\n```")
    assert doc == {
        "type": "doc",
        "version": 1,
        "content": [
            {"type": "heading", "attrs": {"level": 1}, "content": [{"type": "text", "text": "Hi"}]},
            {
                "type": "paragraph",
                "content": [
                    {"type": "text", "text": "See "},
                    {
                        "type": "text",
                        "text": "docs",
                        "marks": [{"type": "link", "attrs": {"href": "https://x.io"}}],
                    },
                    {"type": "text", "text": " and "},
                    {"type": "text", "text": "f()", "marks": [{"type": "code"}]},
                    {"type": "hardBreak"},
                    {"type": "text", "text": "next"},
                ],
            },
            {
                "type": "bulletList",
                "content": [
                    {
                        "type": "listItem",
                        "content": [
                            {"type": "paragraph", "content": [{"type": "text", "text": "a"}]},
                            {
                                "type": "bulletList",
                                "content": [
                                    {
                                        "type": "listItem",
                                        "content": [
                                            {"type": "paragraph", "content": [{"type": "text", "text": "b"}]}
                                        ],
                                    }
                                ],
                            },
                        ],
                    }
                ],
            },
            {"type": "codeBlock", "attrs": {"language": "sh"}, "content": [{"type": "text", "text": "ls"}]},
        ],
    }


def para(*nodes: dict[str, Any]) -> dict[str, Any]:
    return {"type": "paragraph", "content": list(nodes)}


def doc(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"type": "doc", "version": 1, "content": list(blocks)}


def test_mentions_emoji_and_cards_degrade_to_text() -> None:
    value = doc(
        para(
            {"type": "mention", "attrs": {"id": "5b10abc", "text": "@Anna Smith"}},
            {"type": "text", "text": " see "},
            {"type": "inlineCard", "attrs": {"url": "https://x.atlassian.net/browse/SUP-1"}},
            {"type": "text", "text": " "},
            {"type": "emoji", "attrs": {"shortName": ":smile:", "text": "😄"}},
            {"type": "mention", "attrs": {"id": "5b10def", "text": "Ed"}},
        )
    )
    assert adf_to_text(value) == "@Anna Smith see https://x.atlassian.net/browse/SUP-1 😄@Ed"
    # Back to ADF they are plain text: the mention cannot be rebuilt without the account id.
    assert text_to_adf(adf_to_text(value))["content"][0]["content"][0]["type"] == "text"


def test_media_tables_panels_and_unknown_nodes_keep_their_words() -> None:
    value = doc(
        {
            "type": "mediaSingle",
            "content": [{"type": "media", "attrs": {"id": "abc", "type": "file", "alt": "photo.png"}}],
        },
        {
            "type": "table",
            "content": [
                {
                    "type": "tableRow",
                    "content": [
                        {"type": "tableHeader", "content": [para({"type": "text", "text": "Name"})]},
                        {"type": "tableHeader", "content": [para({"type": "text", "text": "Value"})]},
                    ],
                },
                {
                    "type": "tableRow",
                    "content": [
                        {"type": "tableCell", "content": [para({"type": "text", "text": "a"})]},
                        {"type": "tableCell", "content": [para({"type": "text", "text": "1"})]},
                    ],
                },
            ],
        },
        {
            "type": "panel",
            "attrs": {"panelType": "info"},
            "content": [para({"type": "text", "text": "Note"})],
        },
        {"type": "somethingNew", "content": [para({"type": "text", "text": "still here"})]},
        para({"type": "status", "attrs": {"text": "IN REVIEW"}}),
    )
    assert (
        adf_to_text(value) == "[photo.png]\n\n| Name | Value |\n| a | 1 |\n\nNote\n\nstill here\n\nIN REVIEW"
    )


def test_empty_values() -> None:
    assert adf_to_text(None) is None
    assert adf_to_text(doc()) is None
    assert adf_to_text("already text") == "already text"
    assert text_to_adf(None) is None
    assert text_to_adf("  \n ") is None
    assert text_to_adf("a\r\nb") == doc(
        para({"type": "text", "text": "a"}, {"type": "hardBreak"}, {"type": "text", "text": "b"})
    )
