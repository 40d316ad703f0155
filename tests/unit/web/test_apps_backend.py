"""The apps proxy's connections to apps (``apps_client``): one receive buffer per
connection, backpressure, keep-alive, and HTTP's framings, against a real asyncio
server that records what it was sent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import httpcore
import httpx
import pytest

from sandman.web.apps_proxy import (
    UPSTREAM_BUFFER,
    UPSTREAM_MIN_FREE,
    _Backend,
    _Buffered,
    apps_client,
    keep_heap,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class FakeTransport:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")


def fill(protocol: _Buffered, data: bytes) -> None:
    """What asyncio does on a readable socket: recv_into the protocol's buffer."""
    room = protocol.get_buffer(-1)
    assert len(room) >= len(data)
    room[: len(data)] = data
    protocol.buffer_updated(len(data))


def test_a_full_buffer_pauses_reading_until_read() -> None:
    protocol = _Buffered(UPSTREAM_BUFFER)
    transport = FakeTransport()
    protocol.transport = transport  # type: ignore[assignment]
    fill(protocol, b"a" * (UPSTREAM_BUFFER - UPSTREAM_MIN_FREE))
    assert transport.calls == []
    fill(protocol, b"b")  # less room than UPSTREAM_MIN_FREE: the app waits
    assert transport.calls == ["pause"]
    assert bytes(protocol.take(10)) == b"a" * 10
    assert transport.calls == ["pause", "resume"]


def test_unread_bytes_survive_compaction() -> None:
    protocol = _Buffered(UPSTREAM_BUFFER)
    protocol.transport = FakeTransport()  # type: ignore[assignment]
    head = bytes(range(256)) * ((UPSTREAM_BUFFER - UPSTREAM_MIN_FREE) // 256 + 1)
    fill(protocol, head)
    assert bytes(protocol.take(len(head) - 1000)) == head[:-1000]
    fill(protocol, b"tail")  # moves the 1000 unread bytes to the front first
    assert protocol.start == 0
    assert bytes(protocol.take(UPSTREAM_BUFFER)) == head[-1000:] + b"tail"


def test_malloc_keeps_its_heap_on_glibc() -> None:
    import os

    try:
        os.confstr("CS_GNU_LIBC_VERSION")
    except ValueError:
        pytest.skip("not glibc")
    assert keep_heap() is True


def test_the_client_uses_the_buffered_backend() -> None:
    """Loud if httpx renames the pool the proxy gives its own backend."""
    client = apps_client()
    pool = client._transport._pool  # type: ignore[attr-defined]
    assert isinstance(pool, httpcore.AsyncConnectionPool)
    assert isinstance(pool._network_backend, _Backend)


async def serve(handler: Handler) -> tuple[asyncio.Server, str, list[int]]:
    connections: list[int] = []

    async def counted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(counted, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}", connections


async def read_request(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:-2])}
    body = b""
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while size := int((await reader.readline()).strip(), 16):
            body += await reader.readexactly(size)
            await reader.readline()
        await reader.readline()
    return head[0], headers, body


def test_framings_keep_alive_and_an_idle_connection_the_app_closed() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                line, _, body = await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            method, target, _ = line.split(" ")
            if target == "/chunked":
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                writer.write(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
            elif target == "/echo":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            elif target == "/big":
                size = 5 * UPSTREAM_BUFFER + 123
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
                if method != "HEAD":
                    writer.write(bytes(range(256)) * (size // 256) + bytes(size % 256))
            elif target == "/bye":  # answers, then closes the kept-alive connection
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbye")
                await writer.drain()
                return
            await writer.drain()

    async def run() -> None:
        server, url, connections = await serve(handler)
        async with server, apps_client() as client:
            chunked = await client.get(f"{url}/chunked")
            assert chunked.content == b"hello world"
            upload = bytes(range(256)) * 8192  # 2 MiB, streamed

            async def pieces() -> AsyncIterator[bytes]:
                yield upload[:1000]
                yield upload[1000:]

            sent = await client.post(f"{url}/echo", content=pieces())
            assert sent.content == upload
            big = await client.get(f"{url}/big")
            size = 5 * UPSTREAM_BUFFER + 123
            assert big.content == bytes(range(256)) * (size // 256) + bytes(size % 256)
            head = await client.head(f"{url}/big")
            assert head.headers["content-length"] == str(size) and head.content == b""
            assert len(connections) == 1  # all of it on one kept-alive connection
            assert (await client.get(f"{url}/bye")).content == b"bye"
            await asyncio.sleep(0.1)  # the app has closed it by now
            assert (await client.get(f"{url}/chunked")).content == b"hello world"
            assert len(connections) == 2

    asyncio.run(run())


def test_an_app_that_stalls_times_out_and_one_that_is_gone_is_a_connect_error() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async def run() -> None:
        server, url, _ = await serve(silent)
        async with server, apps_client() as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.get(f"{url}/", timeout=httpx.Timeout(5, read=0.2))
        with pytest.raises(httpx.ConnectError):
            async with apps_client() as client:
                await client.get(url)  # the server is closed now

    asyncio.run(run())


def test_an_app_that_hangs_up_mid_answer_is_an_error() -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
        await writer.drain()

    async def run() -> None:
        server, url, _ = await serve(cut)
        async with server, apps_client() as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.get(url)

    asyncio.run(run())


def test_which_answers_are_read_whole() -> None:
    from sandman.web.apps_proxy import SMALL_ANSWER, _small

    def answer(status: int = 200, **headers: str) -> httpx.Response:
        return httpx.Response(status, headers={k.replace("_", "-"): v for k, v in headers.items()})

    assert _small("GET", answer(content_length="0"))
    assert _small("GET", answer(content_length=str(SMALL_ANSWER)))
    assert not _small("GET", answer(content_length=str(SMALL_ANSWER + 1)))
    assert not _small("GET", answer())  # read until the app closes: streamed
    assert not _small("GET", answer(transfer_encoding="chunked"))
    assert not _small("GET", answer(content_length="12, 12"))
    assert _small("HEAD", answer(content_length=str(1 << 30)))  # no body follows
    assert _small("GET", answer(304)) and _small("GET", answer(204))
