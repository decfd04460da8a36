"""Reading a request body under a size cap: raw bytes, or a multipart upload to a temp file.

The cap is enforced while the body streams in, so an oversized upload is refused after at
most ``max_bytes`` have been read, never held in memory or written to disk in full. The
multipart field ``file`` is written straight to a temporary file (OpenCV decodes video from
a path); other fields are ignored.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Mapping
from pathlib import Path, PurePath

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect
from starlette.types import Receive

FILE_FIELD = "file"
MAX_PARTS = 16
MAX_HEADER_BYTES = 8192
# What is read and dropped of a body that an error answers early (see Body.drain)
DRAIN_BYTES = 8 << 20
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# The first box of an MP4 / QuickTime file
_MP4_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"})
_SUFFIXES = {"avi": (".avi",), "mp4": (".mp4", ".mov", ".m4v"), "mkv": (".mkv", ".webm")}


class UploadError(ValueError):
    """A request body that cannot be read; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def too_large(max_bytes: int) -> UploadError:
    return UploadError(
        413,
        f"request body larger than {max_bytes / 2**20:g} MB, the most this service accepts "
        "(VIDEOANOM_MAX_UPLOAD_MB)",
    )


class Body:
    """A request body read from the raw ASGI ``receive``, at most ``max_bytes``.

    Tracks how much was read, so that an error answered before the body is consumed can
    first :meth:`drain` a bounded rest of it: a client still sending is then not cut off
    mid-upload (a TCP reset), and reads the error instead.
    """

    def __init__(self, receive: Receive, max_bytes: int | None = None) -> None:
        self._receive = receive
        self.max_bytes = max_bytes
        self.read = 0
        self.started = False
        self.done = False

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's chunks; raises a 413 :class:`UploadError` past ``max_bytes``."""
        while not self.done:
            chunk = await self._next()
            if self.max_bytes is not None and self.read > self.max_bytes:
                raise too_large(self.max_bytes)
            if chunk:
                yield chunk

    async def read_all(self) -> bytes:
        """The whole body in memory (JSON batches), at most ``max_bytes``."""
        body = bytearray()
        async for chunk in self.chunks():
            body += chunk
        return bytes(body)

    async def drain(self, headers: Mapping[str, str], limit: int = DRAIN_BYTES) -> None:
        """Read and drop up to ``limit`` more bytes of an unfinished body.

        Not when the client asked ``Expect: 100-continue`` and nothing was read yet: it has
        not sent the body, and waits for the answer instead.
        """
        if self.done:
            return
        if not self.started and headers.get("expect", "").lower() == "100-continue":
            return
        stop = self.read + limit
        try:
            while not self.done and self.read < stop:
                await self._next()
        except ClientDisconnect:
            pass

    async def _next(self) -> bytes:
        self.started = True
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.done = True
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        self.read += len(chunk)
        self.done = not message.get("more_body", False)
        return chunk


class _FilePart:
    """python-multipart callbacks: the ``file`` part goes to ``handle``, others are dropped."""

    def __init__(self, handle) -> None:
        self.handle = handle
        self.parts = 0
        self.files = 0
        self.filename = ""
        self.size = 0
        self.finished = False
        self._header_name = b""
        self._header_value = b""
        self._disposition: bytes | None = None
        self._writing = False

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise UploadError(400, f"multipart body has more than {MAX_PARTS} parts")
        self._disposition = None
        self._writing = False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]
        self._check_header()

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]
        self._check_header()

    def _check_header(self) -> None:
        if len(self._header_name) + len(self._header_value) > MAX_HEADER_BYTES:
            raise UploadError(400, "a multipart part header is too long")

    def on_header_end(self) -> None:
        if self._header_name.strip().lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def on_headers_finished(self) -> None:
        kind, options = parse_options_header(self._disposition)
        if kind != b"form-data" or b"name" not in options:
            raise UploadError(
                400, 'every multipart part needs "Content-Disposition: form-data; name=..."'
            )
        if options[b"name"] == FILE_FIELD.encode():
            self.files += 1
            if self.files > 1:
                raise UploadError(400, f"send one video per request (one {FILE_FIELD!r} field)")
            self.filename = options.get(b"filename", b"").decode("utf-8", "replace")
            self._writing = True

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._writing:
            self.handle.write(data[start:end])
            self.size += end - start

    def on_part_end(self) -> None:
        self._writing = False

    def on_end(self) -> None:
        self.finished = True

    def callbacks(self) -> dict:
        names = (
            "on_part_begin",
            "on_part_data",
            "on_part_end",
            "on_header_field",
            "on_header_value",
            "on_header_end",
            "on_headers_finished",
            "on_end",
        )
        return {name: getattr(self, name) for name in names}


async def receive_video(content_type: str, body: Body, folder: str | None = None) -> Path:
    """Stream a ``multipart/form-data`` body's ``file`` field to a file in a new temp folder.

    The file is named after the client's file name (sanitised), so messages about it name
    what the client sent. Returns its path; the caller removes ``path.parent``. Raises
    :class:`UploadError`: 400 for a malformed body, 413 past the body's cap, 422 for a
    missing or empty ``file``.
    """
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise UploadError(400, "multipart/form-data without a boundary parameter")
    temp = Path(tempfile.mkdtemp(prefix="videoanom-upload-", dir=folder))
    try:
        partial = temp / "upload.part"
        with open(partial, "wb") as handle:
            part = _FilePart(handle)
            try:
                parser = MultipartParser(boundary, part.callbacks())
                async for chunk in body.chunks():
                    parser.write(chunk)
                parser.finalize()
            except FormParserError as error:
                raise UploadError(400, f"malformed multipart body: {error}") from None
        if part.files == 0:
            raise UploadError(
                422,
                f"multipart body has no {FILE_FIELD!r} field: send the video as "
                f"-F {FILE_FIELD}=@clip.avi",
            )
        if not part.finished:
            raise UploadError(400, "multipart body ends before its closing boundary")
        if part.size == 0:
            raise UploadError(422, f"the uploaded {FILE_FIELD!r} is empty")
        name = safe_file_name(part.filename)
        container = sniff_container(partial)
        if container is None:
            raise UploadError(
                422, f"{name} is not a video file: send an AVI, MP4, MOV or MKV container"
            )
        # FFmpeg (under OpenCV) picks a demuxer by extension as well as by content: give the
        # file its container's extension, never one that names another format
        if Path(name).suffix.lower() not in _SUFFIXES[container]:
            name = f"{Path(name).stem or 'upload'}{_SUFFIXES[container][0]}"
        path = temp / name
        os.replace(partial, path)
        return path
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def sniff_container(path: Path) -> str | None:
    """ "avi", "mp4" (MP4 or QuickTime MOV) or "mkv" (Matroska, WebM) from the first bytes.

    Only these containers are handed to FFmpeg: it would also read text files, playlists
    (HLS, concat: they name other files and URLs to open) and image sequences.
    """
    with open(path, "rb") as handle:
        head = handle.read(12)
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[4:8] in _MP4_BOXES:
        return "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "mkv"
    return None


def safe_file_name(name: str) -> str:
    """The client's file name reduced to ``[A-Za-z0-9._-]`` (no folders), for messages and
    for OpenCV, which picks a demuxer partly by the extension."""
    base = _UNSAFE.sub("_", PurePath(name.replace("\\", "/")).name).strip("._")[:100]
    return base or "upload.video"
