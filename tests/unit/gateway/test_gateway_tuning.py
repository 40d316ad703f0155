"""The asyncssh fixes: they must notice when asyncssh changes underneath."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Iterator
from typing import Any, ClassVar

import asyncssh
import pytest
from asyncssh.channel import SSHChannel
from asyncssh.constants import MSG_CHANNEL_DATA, MSG_IGNORE
from asyncssh.crypto.cipher import GCMCipher
from asyncssh.encryption import get_encryption
from asyncssh.packet import SSHPacketLogger, String, UInt32
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from sandman.gateway import asyncssh_tuning
from sandman.gateway.tuning import datapath


@pytest.fixture(autouse=True)
def stock() -> Iterator[None]:
    asyncssh_tuning.revert()
    yield
    asyncssh_tuning.revert()


# -- pinning ----------------------------------------------------------------------


def test_installed_asyncssh_is_the_pinned_one() -> None:
    # If this fails, asyncssh was upgraded: re-read every function listed in
    # asyncssh_tuning.PATCHES, re-check (or drop) its fix, then update
    # PINNED_VERSION and the digests.
    assert asyncssh.__version__ == asyncssh_tuning.PINNED_VERSION
    assert asyncssh_tuning.is_supported()


@pytest.mark.parametrize("patch", asyncssh_tuning.PATCHES, ids=lambda p: p.key)
def test_stock_source_is_the_one_each_fix_was_written_for(patch: asyncssh_tuning.Patch) -> None:
    stock = patch.owner.__dict__[patch.name]
    assert asyncssh_tuning.source_digest(stock) == patch.sha256, (
        f"asyncssh changed {patch.key}: re-check its fix in asyncssh_tuning"
    )


def test_apply_and_revert() -> None:
    replaced = [p for p in asyncssh_tuning.PATCHES if p.replacement is not None]
    assert len(replaced) == 9
    stock = {p.key: p.owner.__dict__[p.name] for p in replaced}
    assert asyncssh_tuning.apply()
    assert asyncssh_tuning.is_applied()
    for p in replaced:
        assert p.owner.__dict__[p.name] is p.replacement
    assert asyncssh_tuning.apply()  # idempotent
    assert asyncssh_tuning.is_supported()  # still judged on the stock sources
    asyncssh_tuning.revert()
    assert not asyncssh_tuning.is_applied()
    for p in replaced:
        assert p.owner.__dict__[p.name] is stock[p.key]


def test_refuses_other_versions(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(asyncssh, "__version__", "9.9.9")
    with caplog.at_level(logging.WARNING):
        assert not asyncssh_tuning.apply()
    assert not asyncssh_tuning.is_applied()
    assert "stock asyncssh" in caplog.text


def test_refuses_all_when_one_function_differs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    patches = list(asyncssh_tuning.PATCHES)
    last = patches[-1]
    patches[-1] = asyncssh_tuning.Patch(last.owner, last.name, "0" * 64, last.replacement)
    monkeypatch.setattr(asyncssh_tuning, "PATCHES", tuple(patches))
    stock_send = asyncssh.connection.SSHConnection._send
    with caplog.at_level(logging.WARNING):
        assert not asyncssh_tuning.apply()
    assert not asyncssh_tuning.is_applied()
    assert asyncssh.connection.SSHConnection._send is stock_send
    assert last.key in caplog.text


def test_refuses_a_cryptography_without_decrypt_into(monkeypatch: pytest.MonkeyPatch) -> None:
    class OldAESGCM:  # cryptography < 47
        pass

    monkeypatch.setattr(asyncssh_tuning, "AESGCM", OldAESGCM)
    assert not asyncssh_tuning.apply()
    assert not asyncssh_tuning.is_applied()


def test_a_function_without_installed_source_counts_as_changed() -> None:
    assert asyncssh_tuning.source_digest(len) == ""  # no source, no crash


# -- window re-opening ---------------------------------------------------------------


class FakeChannel:
    """Just the attributes _deliver_data touches."""

    def __init__(self, init: int, recv_window: int, buffered: list[int]) -> None:
        self._init_recv_window = init
        self._recv_window = recv_window
        self._recv_buf: list[tuple[bytes, Any]] = [(b"x" * n, None) for n in buffered]
        self._encoding = None
        self._session = self
        self.adjusts: list[int] = []
        self.delivered: list[bytes] = []

    def send_packet(self, pkttype: int, *args: bytes) -> None:
        self.adjusts.append(int.from_bytes(args[0], "big"))

    def data_received(self, data: bytes, datatype: Any) -> None:
        self.delivered.append(data)


def test_window_is_not_regranted_for_buffered_data() -> None:
    init = 1000
    # 900 bytes outstanding, of which 200 still sit in the paused buffer
    chan = FakeChannel(init, recv_window=100, buffered=[200])
    asyncssh_tuning._deliver_data(chan, b"y" * 10, None)
    assert chan.delivered == [b"y" * 10]
    # only the 700 delivered bytes are granted again; buffered + window == init
    assert chan.adjusts == [700]
    assert chan._recv_window + 200 == init


def test_stock_behaviour_would_regrant_everything() -> None:
    """Documents the bug the fix exists for (fails if asyncssh fixes it)."""
    chan = FakeChannel(1000, recv_window=100, buffered=[200])
    chan.logger = logging.getLogger("fake")  # type: ignore[attr-defined]
    chan.logger.debug2 = lambda *a: None  # type: ignore[attr-defined]
    SSHChannel._deliver_data(chan, b"y" * 10, None)  # type: ignore[arg-type]
    assert chan.adjusts == [900]


def test_no_adjust_while_window_is_half_open() -> None:
    chan = FakeChannel(1000, recv_window=600, buffered=[])
    asyncssh_tuning._deliver_data(chan, b"z", None)
    assert chan.adjusts == []


# -- packet logging ----------------------------------------------------------------


class RecordingLogger:
    def __init__(self, debug_level: int, enabled: bool) -> None:
        self._debug_level = debug_level
        self._enabled = enabled
        self.lines: list[tuple[Any, ...]] = []

    def isEnabledFor(self, level: int) -> bool:
        return self._enabled

    def packet(self, pktid: int | None, packet: bytes, msg: str, *args: Any) -> None:
        self.lines.append((pktid, bytes(packet), msg % args))


class FakeLogged:
    _handler_names: ClassVar[dict[int, str]] = {MSG_CHANNEL_DATA: "MSG_CHANNEL_DATA"}

    def __init__(self, logger: RecordingLogger) -> None:
        self.logger = logger


@pytest.mark.parametrize("payload", [b"", b"a", b"abc"])
@pytest.mark.parametrize("pkttype", [MSG_CHANNEL_DATA, 250])
@pytest.mark.parametrize("note", ["", "skipped"])
def test_packet_log_lines_match_stock_when_enabled(payload: bytes, pkttype: int, note: str) -> None:
    tuned, stock = FakeLogged(RecordingLogger(3, True)), FakeLogged(RecordingLogger(3, True))
    asyncssh_tuning._log_packet(tuned, "Sent", pkttype, 7, payload, note)
    SSHPacketLogger._log_packet(stock, "Sent", pkttype, 7, payload, note)  # type: ignore[arg-type]
    assert tuned.logger.lines == stock.logger.lines
    assert len(tuned.logger.lines) == 1


@pytest.mark.parametrize(("level", "enabled"), [(1, True), (2, True), (3, False)])
def test_packet_log_formats_nothing_when_off(level: int, enabled: bool) -> None:
    class Exploding(FakeLogged):
        @property
        def _handler_names(self) -> dict[int, str]:  # type: ignore[override]
            raise AssertionError("formatted a packet log line nobody reads")

    handler = Exploding(RecordingLogger(level, enabled))
    asyncssh_tuning._log_packet(handler, "Received", MSG_CHANNEL_DATA, 1, b"x" * 100, "")
    assert handler.logger.lines == []


# -- send_packet and _send -----------------------------------------------------------


class FakeConn:
    """The attributes SSHConnection.send_packet touches, after kex and auth."""

    _handler_names: ClassVar[dict[int, str]] = {}

    def __init__(self, cipher: str) -> None:
        self.key = os.urandom(32 if "256" in cipher or "chacha" in cipher else 16)
        self.iv = os.urandom(12 if "gcm" in cipher else 16)
        self.cipher = cipher.encode()
        self._send_encryption = get_encryption(self.cipher, self.key, self.iv)
        self._auth_complete = self._kex_complete = True
        self._auth_in_progress = False
        self._rekey_bytes_sent, self._rekey_bytes, self._rekey_seconds = 0, 1 << 40, 0
        self._rekey_time = 0.0
        self._deferred_packets: list[Any] = []
        self._compressor = None
        self._compress_after_auth = False
        self._send_enchdrlen = 0 if "gcm" in cipher or "chacha" in cipher else 5
        self._send_blocksize = 16 if "ctr" in cipher or "gcm" in cipher else 8
        self._send_seq = 3
        self._strict_kex = True
        self.sent: list[bytes] = []
        self.logger = RecordingLogger(1, False)

    def _send(self, data: bytes) -> None:
        self.sent.append(data)

    def send_packet(self, pkttype: int, *args: bytes, handler: Any = None) -> None:
        asyncssh_tuning._send_packet(self, pkttype, *args, handler=handler)

    def log_sent_packet(self, *args: Any) -> None:
        pass

    def decrypt_all(self) -> list[bytes]:
        """Decrypt what was sent (AES-GCM, or AES-CTR without MAC) into payloads."""
        stream = b"".join(self.sent)
        if b"ctr" in self.cipher:
            ctr = Cipher(algorithms.AES(self.key), modes.CTR(self.iv)).decryptor()
            stream = ctr.update(stream) + ctr.finalize()
        dec = get_encryption(self.cipher, self.key, self.iv)
        out, seq = [], 3
        while stream:
            pktlen = int.from_bytes(stream[:4], "big")
            if b"gcm" in self.cipher:
                first, rest = stream[:4], stream[4 : 4 + pktlen]
                mac = stream[4 + pktlen : 20 + pktlen]
                plain = dec.decrypt_packet(seq, first, rest, 4, mac)
                stream = stream[20 + pktlen :]
            else:
                plain = stream[4 : 4 + pktlen]
                stream = stream[4 + pktlen :]
            assert plain is not None
            out.append(plain[1 : -plain[0]])
            seq += 1
        return out


def test_no_ignore_packet_with_gcm_and_payload_round_trips() -> None:
    conn = FakeConn("aes128-gcm@openssh.com")
    payloads = [UInt32(5) + String(os.urandom(n)) for n in (0, 1, 15, 16, 32768)]
    for p in payloads:
        conn.send_packet(MSG_CHANNEL_DATA, p)
    assert conn._send_seq == 3 + len(payloads)
    assert conn.decrypt_all() == [bytes([MSG_CHANNEL_DATA]) + p for p in payloads]


def test_ignore_packet_kept_for_non_aead_ciphers() -> None:
    conn = FakeConn("aes128-ctr")
    conn.send_packet(MSG_CHANNEL_DATA, UInt32(5) + String(b"hello"))
    assert conn._send_seq == 5  # MSG_IGNORE + the data packet
    assert conn.decrypt_all() == [
        bytes([MSG_IGNORE]) + String(b""),
        bytes([MSG_CHANNEL_DATA]) + UInt32(5) + String(b"hello"),
    ]


def test_packets_before_auth_are_deferred() -> None:
    conn = FakeConn("aes128-gcm@openssh.com")
    conn._auth_complete = False
    conn.send_packet(MSG_CHANNEL_DATA, b"x")
    assert conn._deferred_packets == [(MSG_CHANNEL_DATA, (b"x",))]
    assert conn.sent == []


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing


class SendingConn:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._transport: FakeTransport | None = FakeTransport()
        self._loop = loop


def test_send_writes_once_per_loop_iteration() -> None:
    asyncio.run(_send_writes_once_per_loop_iteration())


async def _send_writes_once_per_loop_iteration() -> None:
    conn = SendingConn(asyncio.get_running_loop())
    transport = conn._transport
    assert transport is not None
    for chunk in (b"a", b"bc", b"def"):
        asyncssh_tuning._send(conn, chunk)
    assert transport.writes == []
    await asyncio.sleep(0)
    assert transport.writes == [b"abcdef"]
    asyncssh_tuning._send(conn, b"g")
    await asyncio.sleep(0)
    assert transport.writes == [b"abcdef", b"g"]


def test_send_flushes_before_a_forced_close_aborts() -> None:
    asyncio.run(_send_flushes_before_a_forced_close_aborts())


async def _send_flushes_before_a_forced_close_aborts() -> None:
    loop = asyncio.get_running_loop()
    conn = SendingConn(loop)
    transport = conn._transport
    assert transport is not None
    asyncssh_tuning._send(conn, b"bye")
    # what SSHConnection._force_close does
    loop.call_soon(setattr, transport, "closing", True)
    conn._transport = None
    asyncssh_tuning._send(conn, b"dropped")  # stock drops this too
    await asyncio.sleep(0)
    assert transport.writes == [b"bye"]
    assert transport.closing


def test_send_drops_data_for_a_lost_transport() -> None:
    asyncio.run(_send_drops_data_for_a_lost_transport())


async def _send_drops_data_for_a_lost_transport() -> None:
    conn = SendingConn(asyncio.get_running_loop())
    transport = conn._transport
    assert transport is not None
    asyncssh_tuning._send(conn, b"x")
    transport.closing = True
    await asyncio.sleep(0)
    assert transport.writes == []


class ClockLoop:
    def __init__(self) -> None:
        self.now = 100.0

    def time(self) -> float:
        return self.now


class ReadingConn:
    """What ``_data_received`` touches when no short path applies."""

    _recv_encryption = None

    def __init__(self) -> None:
        self._loop = ClockLoop()
        self._inpbuf = b""
        self.parsed: list[bytes] = []
        self.keepalive_resets: list[float] = []

    def _recv_handler(self) -> bool:
        self.parsed.append(bytes(self._inpbuf))
        self._inpbuf = b""
        return False

    def _reset_keepalive_timer(self) -> None:
        self.keepalive_resets.append(self._loop.now)


def test_keepalive_timer_is_rearmed_at_most_once_a_second() -> None:
    conn = ReadingConn()
    for now in (100.0, 100.4, 100.9, 101.0, 101.5, 130.0):
        conn._loop.now = now
        asyncssh_tuning._data_received(conn, b"x")
    assert conn.keepalive_resets == [100.0, 101.0, 130.0]
    assert conn.parsed == [b"x"] * 6  # every read is still parsed


# -- AES-GCM ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["aes128-gcm", "aes256-gcm"])
def test_gcm_with_reused_context_matches_stock(name: str) -> None:
    key, iv = os.urandom(16 if "128" in name else 32), os.urandom(12)
    tuned_tx, stock_tx = GCMCipher(name, key, iv), GCMCipher(name, key, iv)
    tuned_rx, stock_rx = GCMCipher(name, key, iv), GCMCipher(name, key, iv)
    for n in (0, 16, 1000, 32768):
        hdr, data = UInt32(n), os.urandom(n)
        tuned = asyncssh_tuning._gcm_encrypt_and_sign(tuned_tx, hdr, data)
        assert tuned == stock_tx.encrypt_and_sign(hdr, data)
        packet, mac = tuned
        assert asyncssh_tuning._gcm_verify_and_decrypt(tuned_rx, hdr, packet[4:], mac) == data
        assert stock_rx.verify_and_decrypt(hdr, packet[4:], mac) == data
    # a forged tag is refused, and the IV still moves on as stock does
    packet, mac = asyncssh_tuning._gcm_encrypt_and_sign(tuned_tx, b"\0\0\0\1", b"z")
    bad = bytes([mac[0] ^ 1]) + mac[1:]
    assert asyncssh_tuning._gcm_verify_and_decrypt(tuned_rx, b"\0\0\0\1", packet[4:], bad) is None
    assert tuned_rx._iv == tuned_tx._iv


# -- a real client and server with everything applied -----------------------------


class EchoServer(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return False


async def _echo(process: asyncssh.SSHServerProcess[bytes]) -> None:
    digest = hashlib.sha256()
    total = 0
    while data := await process.stdin.read(1 << 16):
        digest.update(data)
        total += len(data)
        process.stdout.write(data)
    await process.stdout.drain()
    process.stderr.write(f"{total} {digest.hexdigest()}\n".encode())
    process.exit(0)


@pytest.mark.parametrize(
    "cipher", ["aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com", "aes128-ctr"]
)
def test_real_connection_relays_mebibytes_byte_exact(cipher: str) -> None:
    assert asyncssh_tuning.apply()
    asyncio.run(_relay_through_real_connection(cipher))


async def _relay_through_real_connection(cipher: str, size: int = 3 * 1024 * 1024 + 12345) -> None:
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    server = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_factory=EchoServer,
        server_host_keys=[host_key],
        process_factory=_echo,
        encoding=None,
        encryption_algs=[cipher],
    )
    port = server.sockets[0].getsockname()[1]
    payload = os.urandom(size)
    try:
        async with asyncssh.connect(
            "127.0.0.1",
            port,
            known_hosts=None,
            username="u",
            client_keys=None,
            encryption_algs=[cipher],
            config=None,
        ) as conn:
            assert conn.get_extra_info("send_cipher") == cipher
            proc = await conn.create_process(encoding=None)

            async def feed() -> None:
                for i in range(0, len(payload), 100_000):
                    proc.stdin.write(payload[i : i + 100_000])
                    await proc.stdin.drain()
                proc.stdin.write_eof()

            feeder = asyncio.ensure_future(feed())
            echoed = await proc.stdout.read()
            await feeder
            report = await proc.stderr.read()
            await proc.wait()
    finally:
        server.close()
        await server.wait_closed()
    assert len(echoed) == len(payload)
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
    assert report.decode() == f"{len(payload)} {hashlib.sha256(payload).hexdigest()}\n"


# -- the data short path (AES-GCM) -------------------------------------------------


def test_real_connection_takes_the_data_short_path(monkeypatch: pytest.MonkeyPatch) -> None:
    taken = {"sent": 0, "received": 0}
    send_fast, take = datapath._send_fast, datapath._take_packet

    def counting_send(*args: Any) -> bool:
        ok = send_fast(*args)
        taken["sent"] += ok
        return ok

    def counting_take(*args: Any) -> bool:
        ok = take(*args)
        taken["received"] += ok
        return ok

    monkeypatch.setattr(datapath, "_send_fast", counting_send)
    monkeypatch.setattr(datapath, "_take_packet", counting_take)
    assert asyncssh_tuning.apply()
    asyncio.run(_relay_through_real_connection("aes128-gcm@openssh.com"))
    assert taken["sent"] > 100
    assert taken["received"] > 100


@pytest.mark.parametrize("read_size", [1, 4099, 40000])
def test_short_path_with_packets_cut_across_reads(
    monkeypatch: pytest.MonkeyPatch, read_size: int
) -> None:
    # Small socket reads cut packets (and their length fields) anywhere.
    from asyncio import selector_events

    transport = selector_events._SelectorSocketTransport
    monkeypatch.setattr(transport, "max_size", read_size)
    assert asyncssh_tuning.apply()
    if read_size == 1:
        monkeypatch.setattr(asyncssh_tuning, "_RECV_SLICE", 1)
    asyncio.run(_relay_through_real_connection("aes128-gcm@openssh.com", size=200_001))


def test_short_path_is_off_with_debug_logging() -> None:
    class Conn:
        _recv_encryption = get_encryption(b"aes128-gcm@openssh.com", b"k" * 16, b"i" * 12)
        _recv_macsize = 16
        _auth_complete = True
        _decompressor = None
        _transport = object()

        def __init__(self) -> None:
            self._recv_handler = self._recv_pkthdr

        def _recv_pkthdr(self) -> bool:
            return False

    conn = Conn()
    assert not datapath.receiving_fast(conn)  # not asyncssh's own header parser
    Conn._recv_pkthdr = datapath._STOCK_RECV_PKTHDR  # type: ignore[method-assign]
    conn = Conn()
    assert datapath.receiving_fast(conn)
    asyncssh.set_debug_level(2)
    try:
        assert not datapath.receiving_fast(conn)
    finally:
        asyncssh.set_debug_level(1)


def test_next_iv_matches_stock_update() -> None:
    cipher = GCMCipher("aes128-gcm", b"k" * 16, b"\1\2\3\4" + b"\xff" * 8)
    expected = cipher._iv
    for _ in range(3):
        got = datapath.next_iv(expected)
        cipher._update_iv()
        expected = cipher._iv
        assert got == expected


def test_padding_is_fresh_and_of_the_asked_length(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datapath, "_PAD_POOL_SIZE", 64)
    monkeypatch.setattr(datapath, "_pad_pool", b"")
    draws = [datapath.padding(n) for n in (4, 19, 8, 40, 33, 4)]
    assert [len(d) for d in draws] == [4, 19, 8, 40, 33, 4]
    assert len({bytes(d) for d in draws}) == len(draws)


class WriteChannel:
    """Enough of an ``SSHChannel`` for ``write`` and ``_flush_send_buf``."""

    _write_datatypes = frozenset({1})
    _encoding = None
    _send_state = "open"
    _send_chan = None  # no connection: the flush takes the stock send_packet
    _conn = None

    def __init__(self, window: int, pktsize: int) -> None:
        self._send_buf: list[tuple[Any, Any]] = []
        self._send_buf_len = 0
        self._send_window = window
        self._send_pktsize = pktsize
        self.sent: list[bytes] = []

    def send_packet(self, pkttype: int, *args: bytes) -> None:
        self.sent.append(b"".join(args))

    def _pause_resume_writing(self) -> None:
        pass

    def _flush_send_buf(self) -> None:
        datapath.flush_send_buf(self)


def test_write_queues_without_copying_and_cuts_packets() -> None:
    chan = WriteChannel(window=25, pktsize=10)
    data = bytes(range(40))
    datapath.channel_write(chan, data)
    # 25 bytes of window: packets of 10, 10, 5; the rest waits, uncopied
    assert [s[4:] for s in chan.sent] == [data[:10], data[10:20], data[20:25]]
    assert chan._send_buf_len == 15
    ((rest, _),) = chan._send_buf
    assert isinstance(rest, memoryview) and rest.obj is data and rest == data[25:]
    chan._send_window = 100
    chan._flush_send_buf()
    assert b"".join(s[4:] for s in chan.sent) == data


def test_write_copies_mutable_data_and_checks_like_stock() -> None:
    chan = WriteChannel(window=0, pktsize=10)
    data = bytearray(b"abc")
    datapath.channel_write(chan, data)
    data[:] = b"xyz"
    assert bytes(chan._send_buf[0][0]) == b"abc"
    datapath.channel_write(chan, b"")
    assert len(chan._send_buf) == 1
    with pytest.raises(OSError, match="Invalid extended data type"):
        datapath.channel_write(chan, b"x", 2)
    chan._send_state = "eof"
    with pytest.raises(BrokenPipeError):
        datapath.channel_write(chan, b"x")
