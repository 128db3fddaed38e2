"""A streamed ``multipart/form-data`` body for one file field (GitLab and Salesforce uploads).

``HttpClient.upload``/``request(data=...)`` stream a file object; ``MultipartFile`` is that file object: the
part header, the file's bytes read in chunks from the caller's file, and the closing boundary. It knows its
length (so ``requests`` sends a Content-Length instead of chunked encoding, which some trackers refuse) and
can seek back to its start (so ``HttpClient`` can retry it after a 429 or 5xx).
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Sequence
from typing import IO


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")


class MultipartFile(io.RawIOBase):
    """``--boundary / Content-Disposition: form-data; name=field; filename=... / <file> / --boundary--``."""

    def __init__(
        self,
        field: str,
        filename: str,
        content: IO[bytes],
        content_type: str = "",
        *,
        before: Sequence[tuple[str, str, bytes]] = (),
    ) -> None:
        """``before``: small parts sent ahead of the file, as (name, content type, bytes)."""
        super().__init__()
        self.boundary = uuid.uuid4().hex
        preamble = b"".join(
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{_quote(name)}"\r\n'
            f"Content-Type: {ctype}\r\n\r\n".encode()
            + data
            + b"\r\n"
            for name, ctype, data in before
        )
        self.head = (
            preamble
            + (
                f"--{self.boundary}\r\n"
                f'Content-Disposition: form-data; name="{_quote(field)}"; filename="{_quote(filename)}"\r\n'
                f"Content-Type: {content_type or 'application/octet-stream'}\r\n\r\n"
            ).encode()
        )
        self.tail = f"\r\n--{self.boundary}--\r\n".encode()
        self.content = content
        self.start = content.tell()
        content.seek(0, os.SEEK_END)
        self.size = content.tell() - self.start
        content.seek(self.start)
        self.pos = 0

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __len__(self) -> int:
        return len(self.head) + self.size + len(self.tail)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        target = {os.SEEK_SET: offset, os.SEEK_CUR: self.pos + offset, os.SEEK_END: len(self) + offset}[
            whence
        ]
        self.pos = max(0, min(target, len(self)))
        body = self.pos - len(self.head)
        if 0 <= body <= self.size:
            self.content.seek(self.start + body)
        elif body < 0:
            self.content.seek(self.start)
        return self.pos

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = len(self) - self.pos
        out = bytearray()
        while len(out) < size and self.pos < len(self):
            want = size - len(out)
            if self.pos < len(self.head):
                chunk = self.head[self.pos : self.pos + want]
            elif self.pos < len(self.head) + self.size:
                chunk = self.content.read(min(want, len(self.head) + self.size - self.pos))
                if not chunk:  # the file shrank under us: stop rather than loop
                    break
            else:
                offset = self.pos - len(self.head) - self.size
                chunk = self.tail[offset : offset + want]
            out += chunk
            self.pos += len(chunk)
        return bytes(out)

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
