"""Reading a request's images into memory: one image as the body, or multipart form files.

Bodies are read as they arrive, counted against the limit, and refused (413) as soon as they
pass it, or at once when Content-Length says so; nothing is written to disk (Starlette's own
form parsing would spool large files to a temporary file).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header

from digitnet.errors import DigitnetError

BODY_NAME = "request body"  # what answers and errors call an image sent as the whole body


class RequestError(DigitnetError):
    """A request the server refuses, with its HTTP status and a one-line message."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Upload:
    """One image sent to /predict: a name for answers and errors, and its encoded bytes."""

    name: str
    data: bytes


async def read_uploads(headers, stream: AsyncIterator[bytes], max_body: int, max_files: int,
                       timeout: float) -> list[Upload]:
    """The images of a /predict request: the body itself, or each file of a multipart form.

    Raises:
      RequestError: 413 for a body over `max_body` bytes, 408 when it takes longer than
        `timeout` seconds to arrive, 422 for a malformed form, no files, too many files.
    """
    check_length(headers.get("content-length"), max_body)
    kind, options = parse_options_header(headers.get("content-type"))
    try:
        if kind == b"multipart/form-data":
            form = FormReader(options.get(b"boundary"), max_files)
            await asyncio.wait_for(form.feed(stream, max_body), timeout)
            return form.uploads()
        return [Upload(BODY_NAME, await asyncio.wait_for(read_body(stream, max_body), timeout))]
    except TimeoutError:
        raise RequestError(408, f"{BODY_NAME}: not received within {timeout:g} s") from None


def check_length(length: str | None, max_body: int) -> None:
    """Refuse, before reading any of it, a body whose Content-Length is over the limit."""
    if length is not None and length.isdigit() and int(length) > max_body:
        raise RequestError(413, too_large(f"{int(length)} bytes", max_body))


def too_large(size: str, max_body: int) -> str:
    return f"{BODY_NAME}: {size}, above this server's limit of {max_body} bytes"


async def read_body(stream: AsyncIterator[bytes], max_body: int) -> bytes:
    """The whole body, refused as soon as it passes `max_body` bytes."""
    chunks, size = [], 0
    async for chunk in stream:
        size += len(chunk)
        if size > max_body:
            raise RequestError(413, too_large(f"more than {max_body} bytes", max_body))
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass
class Part:
    headers: dict = field(default_factory=dict)
    chunks: list = field(default_factory=list)


class FormReader:
    """A multipart/form-data body parsed as it arrives, its parts kept in memory."""

    def __init__(self, boundary: bytes | None, max_files: int):
        if not boundary:
            raise RequestError(422, f"{BODY_NAME}: multipart/form-data without a boundary")
        self.max_files = max_files
        self.parts: list[Part] = []
        self.field = b""
        self.value = b""
        self.ended = False
        self.parser = MultipartParser(boundary, callbacks={
            "on_part_begin": self.begin_part, "on_part_data": self.part_data,
            "on_header_field": self.header_field, "on_header_value": self.header_value,
            "on_header_end": self.header_end, "on_end": self.end})

    async def feed(self, stream: AsyncIterator[bytes], max_body: int) -> None:
        size = 0
        async for chunk in stream:
            size += len(chunk)
            if size > max_body:
                raise RequestError(413, too_large(f"more than {max_body} bytes", max_body))
            try:
                self.parser.write(chunk)
            except ValueError as error:  # python-multipart's parse errors
                raise RequestError(422, f"{BODY_NAME}: malformed multipart form "
                                        f"({error})") from None
        if not self.ended:
            raise RequestError(422, f"{BODY_NAME}: truncated multipart form (no final boundary)")

    def begin_part(self) -> None:
        if len(self.parts) >= self.max_files:
            raise RequestError(422, f"{BODY_NAME}: more than {self.max_files} files in one "
                                    f"request (send them in several)")
        self.parts.append(Part())

    def part_data(self, data: bytes, start: int, end: int) -> None:
        self.parts[-1].chunks.append(data[start:end])

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self.field += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self.value += data[start:end]

    def header_end(self) -> None:
        self.parts[-1].headers[self.field.lower()] = self.value
        self.field, self.value = b"", b""

    def end(self) -> None:
        self.ended = True

    def uploads(self) -> list[Upload]:
        """The form's files, in order; a form without any is refused."""
        uploads = []
        for part in self.parts:
            _, options = parse_options_header(part.headers.get(b"content-disposition"))
            if b"filename" in options:
                name = options[b"filename"].decode("utf-8", "replace") or "upload"
                name = name.replace("\r", "\\r").replace("\n", "\\n")  # one-line errors
                uploads.append(Upload(name, b"".join(part.chunks)))
        if not uploads:
            raise RequestError(422, f"{BODY_NAME}: a multipart form without files (send each "
                                    f"image as a file field: curl -F file=@digit.png)")
        return uploads
