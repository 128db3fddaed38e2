"""Atlassian Document Format (ADF) to markdown-ish plain text and back, for Jira descriptions and comments.

Jira Cloud's REST API v3 takes and returns rich text as ADF (a JSON tree: ``doc`` → blocks → inline
nodes with marks). Other trackers and the replica carry plain text, so the connector converts both ways.
The text side is a small, predictable markdown subset, chosen so that both round trips hold:

* text → ADF → text gives the same text (trailing whitespace and runs of blank lines aside);
* ADF → text → ADF gives the same document for the supported nodes.

=================  ======================================  ===========================================
ADF                text                                    notes
=================  ======================================  ===========================================
paragraph          lines separated by a blank line
hardBreak          a single newline inside a paragraph
heading (1-6)      ``# Title`` … ``###### Title``
bulletList         ``- item`` (nested: two more spaces)
orderedList        ``1. item`` (``attrs.order`` = first number)
codeBlock          fenced with ``````` and the language
blockquote         ``> `` before each line
rule               ``---``
text marks         ``**strong**``, ``*em*``, ``~~strike~~``,
                   ```code```, ``[text](href)``
mention            ``@Name``                               degrades: comes back as plain text
emoji              its text (``:smile:`` or the character) degrades: comes back as plain text
inlineCard         its URL                                 degrades: comes back as plain text
media, tables …    a placeholder / cell text               degrade: not rebuilt
=================  ======================================  ===========================================

Anything unknown is rendered through its text content, so no words are lost. ADF keeps a text node's marks
as a set, so the text form writes them in one canonical order (link outermost, then strong, em, strike, code):
``**[a](u)**`` becomes ``[**a**](u)``, the same document.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["adf_to_text", "text_to_adf", "is_adf"]

_MARK_ORDER = ("link", "strong", "em", "strike", "code")


def is_adf(value: Any) -> bool:
    return isinstance(value, dict) and value.get("type") == "doc"


# --- ADF → text --------------------------------------------------------------------------------------------


def adf_to_text(doc: Any) -> str | None:
    """Plain (markdown-ish) text for an ADF document; a string is returned as is, None/empty as None."""
    if doc is None:
        return None
    if isinstance(doc, str):
        return doc or None
    if not is_adf(doc):
        return _inline(doc.get("content") or []) if isinstance(doc, dict) else str(doc)
    text = _blocks(doc.get("content") or [], indent="").strip("\n")
    return text or None


def _blocks(nodes: list[dict[str, Any]], *, indent: str) -> str:
    parts = [_block(node, indent=indent) for node in nodes]
    return "\n\n".join(p for p in parts if p is not None)


def _block(node: dict[str, Any], *, indent: str) -> str | None:
    kind = node.get("type")
    content = node.get("content") or []
    attrs = node.get("attrs") or {}
    if kind == "paragraph":
        return _prefix(_inline(content), indent)
    if kind == "heading":
        level = max(1, min(6, int(attrs.get("level") or 1)))
        return indent + "#" * level + " " + _inline(content)
    if kind in ("bulletList", "orderedList"):
        return _list(node, indent=indent)
    if kind == "codeBlock":
        language = attrs.get("language") or ""
        code = "".join(c.get("text", "") for c in content)
        return _prefix(f"```{language}\n{code}\n```", indent)
    if kind == "blockquote":
        inner = _blocks(content, indent="")
        return _prefix("\n".join(("> " + line).rstrip() for line in inner.split("\n")), indent)
    if kind == "rule":
        return indent + "---"
    if kind == "mediaSingle" or kind == "mediaGroup":
        names = [((c.get("attrs") or {}).get("alt") or "attachment") for c in content]
        return indent + " ".join(f"[{name}]" for name in names)
    if kind == "table":
        rows = []
        for row in content:
            cells = [
                _blocks(cell.get("content") or [], indent="").replace("\n", " ") for cell in row["content"]
            ]
            rows.append("| " + " | ".join(cells) + " |")
        return _prefix("\n".join(rows), indent)
    if kind in ("panel", "expand", "nestedExpand", "layoutSection", "layoutColumn", "bodiedExtension"):
        return _blocks(content, indent=indent)
    if content:  # unknown block: keep its words
        inline = all(c.get("type") in ("text", "hardBreak", "mention", "emoji") for c in content)
        return _prefix(_inline(content), indent) if inline else _blocks(content, indent=indent)
    return indent + str(attrs.get("text") or "") if attrs.get("text") else None


def _prefix(text: str, indent: str) -> str:
    return "\n".join(indent + line if line else line for line in text.split("\n")) if indent else text


def _list(node: dict[str, Any], *, indent: str) -> str:
    ordered = node.get("type") == "orderedList"
    number = int((node.get("attrs") or {}).get("order") or 1)
    lines: list[str] = []
    for item in node.get("content") or []:
        marker = f"{number}. " if ordered else "- "
        number += 1
        children = item.get("content") or []
        first, rest = (children[0], children[1:]) if children else ({"type": "paragraph"}, [])
        if first.get("type") == "paragraph":
            text = _inline(first.get("content") or [])
            text = text.replace("\n", "\n" + indent + " " * len(marker))
            lines.append(indent + marker + text)
        else:
            rest = children
            lines.append(indent + marker.rstrip())
        for child in rest:
            if child.get("type") in ("bulletList", "orderedList"):
                lines.append(_list(child, indent=indent + "  "))
            else:
                lines.append(_block(child, indent=indent + "  ") or "")
    return "\n".join(lines)


def _inline(nodes: list[dict[str, Any]]) -> str:
    out: list[str] = []
    for node in nodes:
        kind = node.get("type")
        attrs = node.get("attrs") or {}
        if kind == "text":
            out.append(_marked(node.get("text", ""), node.get("marks") or []))
        elif kind == "hardBreak":
            out.append("\n")
        elif kind == "mention":
            name = str(attrs.get("text") or attrs.get("displayName") or attrs.get("id") or "someone")
            out.append(name if name.startswith("@") else "@" + name)
        elif kind == "emoji":
            out.append(str(attrs.get("text") or attrs.get("shortName") or ""))
        elif kind in ("inlineCard", "blockCard", "embedCard"):
            out.append(str(attrs.get("url") or ""))
        elif kind == "date":
            out.append(str(attrs.get("timestamp") or ""))
        elif kind == "status":
            out.append(str(attrs.get("text") or ""))
        else:
            out.append(_inline(node.get("content") or []) or str(attrs.get("text") or ""))
    return "".join(out)


def _marked(text: str, marks: list[dict[str, Any]]) -> str:
    kinds = {m.get("type"): m for m in marks}
    if "code" in kinds:
        text = f"`{text}`"
    if "strike" in kinds:
        text = f"~~{text}~~"
    if "em" in kinds:
        text = f"*{text}*"
    if "strong" in kinds:
        text = f"**{text}**"
    if "link" in kinds:
        href = (kinds["link"].get("attrs") or {}).get("href") or ""
        text = f"[{text}]({href})"
    return text


# --- text → ADF --------------------------------------------------------------------------------------------

_HEADING = re.compile(r"^(#{1,6}) (.*)$")
_BULLET = re.compile(r"^( *)[-*] (.*)$")
_ORDERED = re.compile(r"^( *)(\d+)\. (.*)$")
_FENCE = re.compile(r"^```(\S*)\s*$")
_INLINE = re.compile(
    r"\[(?P<ltext>[^\]\n]+)\]\((?P<href>[^)\s]+)\)"
    r"|\*\*(?P<strong>[^*\n]+?)\*\*"
    r"|~~(?P<strike>[^~\n]+?)~~"
    r"|(?<![\w*])\*(?P<em>[^*\s][^*\n]*?)\*(?![\w*])"
    r"|`(?P<code>[^`\n]+)`"
)


def text_to_adf(text: str | None) -> dict[str, Any] | None:
    """An ADF document for markdown-ish text (see the module docstring); None for None or blank text."""
    if text is None or not str(text).strip():
        return None
    lines = str(text).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return {"type": "doc", "version": 1, "content": _parse_blocks(lines)}


def _parse_blocks(lines: list[str]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        fence = _FENCE.match(line)
        if fence:
            end = i + 1
            while end < len(lines) and lines[end].rstrip() != "```":
                end += 1
            code = "\n".join(lines[i + 1 : end])
            node: dict[str, Any] = {"type": "codeBlock"}
            if fence.group(1):
                node["attrs"] = {"language": fence.group(1)}
            if code:
                node["content"] = [{"type": "text", "text": code}]
            blocks.append(node)
            i = end + 1
            continue
        heading = _HEADING.match(line)
        if heading:
            blocks.append(
                {
                    "type": "heading",
                    "attrs": {"level": len(heading.group(1))},
                    "content": _parse_inline(heading.group(2)),
                }
            )
            i += 1
            continue
        if line.rstrip() == "---":
            blocks.append({"type": "rule"})
            i += 1
            continue
        if line.startswith(">"):
            quoted = []
            while i < len(lines) and lines[i].startswith(">"):
                quoted.append(lines[i][2:] if lines[i].startswith("> ") else lines[i][1:])
                i += 1
            blocks.append({"type": "blockquote", "content": _parse_blocks(quoted)})
            continue
        if _BULLET.match(line) or _ORDERED.match(line):
            end = i
            while end < len(lines) and lines[end].strip() and _list_line(lines[end]):
                end += 1
            blocks.append(_parse_list(lines[i:end], 0))
            i = end
            continue
        para = [line]
        i += 1
        while i < len(lines) and lines[i].strip() and not _starts_block(lines[i]):
            para.append(lines[i])
            i += 1
        content: list[dict[str, Any]] = []
        for n, part in enumerate(para):
            if n:
                content.append({"type": "hardBreak"})
            content.extend(_parse_inline(part))
        blocks.append({"type": "paragraph", "content": content})
    return blocks


def _starts_block(line: str) -> bool:
    return bool(
        _FENCE.match(line)
        or _HEADING.match(line)
        or line.rstrip() == "---"
        or line.startswith(">")
        or _BULLET.match(line)
        or _ORDERED.match(line)
    )


def _list_line(line: str) -> bool:
    # an item, or an item's continuation (indented at least two spaces)
    return bool(_BULLET.match(line) or _ORDERED.match(line) or line.startswith("  "))


def _parse_list(lines: list[str], depth: int) -> dict[str, Any]:
    first = _ORDERED.match(lines[0])
    ordered = first is not None and len(first.group(1)) == depth
    node: dict[str, Any] = {"type": "orderedList" if ordered else "bulletList", "content": []}
    if ordered and first is not None and int(first.group(2)) != 1:
        node["attrs"] = {"order": int(first.group(2))}
    items: list[list[str]] = []
    for line in lines:
        bullet, number = _BULLET.match(line), _ORDERED.match(line)
        match = bullet or number
        if match and len(match.group(1)) == depth:
            items.append([match.group(match.lastindex or 2)])
        elif items:
            items[-1].append(line)
    for item in items:
        text_lines = [item[0]]
        rest = item[1:]
        # Continuation lines of the item's own paragraph are indented past the marker, not list items.
        while rest and not (_BULLET.match(rest[0]) or _ORDERED.match(rest[0])):
            text_lines.append(rest.pop(0).strip())
        content: list[dict[str, Any]] = []
        for n, part in enumerate(text_lines):
            if n:
                content.append({"type": "hardBreak"})
            content.extend(_parse_inline(part))
        children: list[dict[str, Any]] = [{"type": "paragraph", "content": content}]
        if rest:
            children.append(_parse_list(rest, depth + 2))
        node["content"].append({"type": "listItem", "content": children})
    return node


def _parse_inline(text: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    pos = 0
    for match in _INLINE.finditer(text):
        if match.start() > pos:
            out.append({"type": "text", "text": text[pos : match.start()]})
        if match.group("ltext") is not None:
            for node in _parse_inline(match.group("ltext")):
                node["marks"] = [{"type": "link", "attrs": {"href": match.group("href")}}] + node.get(
                    "marks", []
                )
                out.append(node)
        else:
            kind = next(k for k in ("strong", "strike", "em", "code") if match.group(k) is not None)
            inner = match.group(kind)
            nodes = [{"type": "text", "text": inner}] if kind == "code" else _parse_inline(inner)
            for node in nodes:
                marks = node.get("marks", []) + [{"type": kind}]
                node["marks"] = sorted(marks, key=lambda m: _MARK_ORDER.index(m["type"]))
                out.append(node)
        pos = match.end()
    if pos < len(text):
        out.append({"type": "text", "text": text[pos:]})
    return [n for n in out if n.get("type") != "text" or n.get("text")]
