"""A short path for channel data over AES-GCM, the bulk of relayed traffic.

Stock asyncssh handles each ``MSG_CHANNEL_DATA`` packet through half a dozen
layers (channel ``send_packet``, connection ``send_packet``, the encryption
shim, the cipher) and copies its payload at each of them: about eight copies
of every byte on the way out and as many on the way in. With AES-GCM, no
compression and packet logging off, these functions build, encrypt, decrypt
and dispatch data packets directly:

* writing (:func:`channel_write`): stock ``SSHChannel.write`` copies every
  chunk into a ``bytearray`` so that the flush can cut packets off its front;
  here ``bytes`` are queued as they are (as a ``memoryview``) and the flush
  takes slices of them;
* sending (:func:`flush_send_buf`): the plaintext packet is assembled in one
  join (padding drawn from a pooled random buffer rather than one
  ``os.urandom`` call per packet) and the ``AESGCM`` output (ciphertext
  followed by its tag, which is exactly what follows the length on the wire)
  is queued as it is;
* receiving (:func:`receive`): packets are decrypted straight out of the
  socket read into a scratch buffer, with the same checks stock asyncssh
  makes. Window adjusts open the channel's send window; data packets go to
  the channel's ``_accept_data``, or, on a relay whose other channel can take
  them at once, are spliced onto it (:func:`_splice`: only the channel number
  and padding are rewritten before encrypting for the other connection).
  Every other packet (requests, key exchange, errors of any kind) is handed,
  whole, to the stock parser, which decrypts it again (the IV only moves on
  once a packet is taken) and processes it as usual.

Anything outside those conditions (other ciphers, compression, rekeying due,
debug logging, a closed transport) takes the stock path unchanged.
"""

from __future__ import annotations

import os
import time
from typing import Any

from asyncssh.channel import SSHChannel, _data_type_names
from asyncssh.connection import SSHConnection
from asyncssh.constants import (
    MSG_CHANNEL_DATA,
    MSG_CHANNEL_EOF,
    MSG_CHANNEL_EXTENDED_DATA,
    MSG_CHANNEL_WINDOW_ADJUST,
)
from asyncssh.encryption import GCMEncryption
from asyncssh.logging import SSHLogger
from asyncssh.packet import SSHPacketHandler, String, UInt32
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_MASK32 = 0xFFFFFFFF
_MASK64 = 0xFFFFFFFFFFFFFFFF
_GCM_TAG = 16
_STOCK_RECV_PKTHDR = SSHConnection.__dict__["_recv_pkthdr"]
_STOCK_PROCESS_DATA = SSHChannel.__dict__["_process_data"]
_STOCK_PROCESS_WINDOW_ADJUST = SSHChannel.__dict__["_process_window_adjust"]
_STOCK_PROCESS_PACKET = SSHPacketHandler.__dict__["process_packet"]
_plain_data_channels: dict[type, bool] = {}
_WINDOW_STATES = frozenset({"open", "eof_pending", "eof"})
_SPLICE_SKIPS = ("_accept_data", "_deliver_data")


def gcm_aead(cipher: Any) -> AESGCM:
    """The ``AESGCM`` context of a ``GCMCipher``, built once per key."""
    aead: AESGCM | None = cipher.__dict__.get("_tuned_aead")
    if aead is None:
        aead = cipher._tuned_aead = AESGCM(cipher._key)
    return aead


def next_iv(iv: bytes) -> bytes:
    """``GCMCipher._update_iv``: the invocation counter (last 8 bytes) plus one.

    Done on the whole 12-byte IV as one integer (the fixed first 4 bytes are
    untouched unless the counter wraps, which is handled apart).
    """
    n = int.from_bytes(iv, "big")
    n = n - _MASK64 if n & _MASK64 == _MASK64 else n + 1
    return n.to_bytes(12, "big")


_PAD_POOL_SIZE = 64 * 1024
_pad_pool = b""
_pad_pos = 0


def padding(n: int) -> bytes:
    """``n`` fresh random bytes, cut from a pooled ``os.urandom`` buffer.

    Every byte is used once; the pool is refilled when it runs out. This saves
    a system call per packet (the padding is encrypted; it needs no more than
    stock's ``os.urandom``).
    """
    global _pad_pool, _pad_pos
    pos = _pad_pos
    if pos + n > len(_pad_pool):
        _pad_pool, pos = os.urandom(_PAD_POOL_SIZE), 0
    _pad_pos = pos + n
    return _pad_pool[pos : pos + n]


def regrant_window(chan: Any, window: int) -> None:
    """Reopen a channel's receive window once ``window`` (what the peer may
    still send, counting data delivered but not yet consumed as unsent) falls
    below half, as stock ``_deliver_data`` does."""
    init = chan._init_recv_window
    if window < init / 2:
        adjust = init - window
        chan.send_packet(MSG_CHANNEL_WINDOW_ADJUST, UInt32(adjust))
        chan._recv_window += adjust


def _quiet() -> bool:
    """Whether asyncssh's debug2 and packet logs are off (they are per packet)."""
    return SSHLogger._debug_level < 2


# -- sending --------------------------------------------------------------------


def _sends_fast(conn: Any) -> bool:
    """Whether a data packet may be sent on ``conn`` without stock ``send_packet``."""
    return not (
        type(conn._send_encryption) is not GCMEncryption
        or conn._compressor
        or not conn._kex_complete
        or not conn._auth_complete
        or conn._rekey_bytes_sent >= conn._rekey_bytes
        or (conn._rekey_seconds and time.monotonic() >= conn._rekey_time)
        or not conn._transport
        or not _quiet()
    )


def _seal(conn: Any, plain: Any, pktlen: int) -> None:
    """Encrypt one whole plaintext packet and queue it, as ``send_packet`` would."""
    lenhdr = pktlen.to_bytes(4, "big")
    cipher = conn._send_encryption._cipher
    iv = cipher._iv
    sealed = gcm_aead(cipher).encrypt(iv, plain, lenhdr)
    cipher._iv = next_iv(iv)
    conn._send(lenhdr)
    conn._send(sealed)
    conn._send_seq = (conn._send_seq + 1) & _MASK32
    conn._rekey_bytes_sent += pktlen


def _send_fast(conn: Any, chan_id: int, datatype: int | None, data: Any) -> bool:
    """Send one data packet as stock ``send_packet`` would; False: use stock."""
    if not _sends_fast(conn):
        return False
    if datatype is None:
        head = UInt32(chan_id) + UInt32(len(data))
        pkttype = MSG_CHANNEL_DATA
    else:
        head = UInt32(chan_id) + UInt32(datatype) + UInt32(len(data))
        pkttype = MSG_CHANNEL_EXTENDED_DATA
    blocksize = conn._send_blocksize
    padlen = -(conn._send_enchdrlen + 1 + len(head) + len(data)) % blocksize
    if padlen < 4:
        padlen += blocksize
    plain = b"".join((bytes((padlen, pkttype)), head, data, padding(padlen)))
    _seal(conn, plain, len(plain))
    return True


def channel_write(self: Any, data: Any, datatype: int | None = None) -> None:
    """``SSHChannel.write`` that queues the data without copying it.

    Stock copies each chunk into a ``bytearray``; ``bytes`` are immutable, so
    they are queued as a ``memoryview`` (anything else is copied once into
    ``bytes``, since the caller may change it later). Checks, encoding and
    logging are as stock.
    """
    if self._send_state != "open":
        raise BrokenPipeError("Channel not open for sending")
    if datatype is not None and datatype not in self._write_datatypes:
        raise OSError("Invalid extended data type")
    if not data:
        return
    if self._encoding:
        data = self._encoder.encode(data)
    buf = memoryview(data if type(data) is bytes else bytes(data))
    datalen = len(buf)
    if not _quiet():
        typename = f" to {_data_type_names[datatype]}" if datatype else ""
        self.logger.debug2(
            "Sending %d data byte%s%s", datalen, "s" if datalen > 1 else "", typename
        )
    self._send_buf.append((buf, datatype))
    self._send_buf_len += datalen
    self._flush_send_buf()


def flush_send_buf(self: Any) -> None:
    """``SSHChannel._flush_send_buf`` sending data packets by :func:`_send_fast`.

    The queued chunks are ``memoryview`` slices (see :func:`channel_write`):
    a packet is cut off the front by slicing, not by deleting from a buffer.
    """
    send_buf = self._send_buf
    while send_buf and self._send_window:
        pktsize = min(self._send_window, self._send_pktsize)
        buf, datatype = send_buf[0]

        if len(buf) > pktsize:
            data = buf[:pktsize]
            send_buf[0] = (buf[pktsize:], datatype)
        else:
            data = buf
            del send_buf[0]

        self._send_buf_len -= len(data)
        self._send_window -= len(data)

        chan_id = self._send_chan
        conn = self._conn
        if chan_id is not None and conn is not None and _send_fast(conn, chan_id, datatype, data):
            continue
        if datatype is None:
            self.send_packet(MSG_CHANNEL_DATA, String(data))
        else:
            self.send_packet(MSG_CHANNEL_EXTENDED_DATA, UInt32(datatype), String(data))

    self._pause_resume_writing()

    if not self._send_buf:
        if self._send_state == "eof_pending":
            self.send_packet(MSG_CHANNEL_EOF)
            self._send_state = "eof"
        elif self._send_state == "close_pending":
            self._close_send()


# -- receiving ------------------------------------------------------------------


def receiving_fast(conn: Any) -> bool:
    """Whether the next packet, at a packet boundary, may take the short path."""
    return (
        type(conn._recv_encryption) is GCMEncryption
        and conn._recv_macsize == _GCM_TAG
        and conn._auth_complete
        and not conn._decompressor
        and conn._transport is not None
        and getattr(conn._recv_handler, "__func__", None) is _STOCK_RECV_PKTHDR
        and _quiet()
    )


def _plain_data_channel(chan: Any) -> bool:
    """Whether the channel's class handles data and window packets with stock code."""
    cls = type(chan)
    known = _plain_data_channels.get(cls)
    if known is None:
        handlers = getattr(cls, "_packet_handlers", {})
        known = _plain_data_channels[cls] = (
            handlers.get(MSG_CHANNEL_DATA) is _STOCK_PROCESS_DATA
            and handlers.get(MSG_CHANNEL_WINDOW_ADJUST) is _STOCK_PROCESS_WINDOW_ADJUST
            and getattr(cls, "process_packet", None) is _STOCK_PROCESS_PACKET
            # what a splice does instead of these must be what they would do
            and all(getattr(cls, n) is getattr(SSHChannel, n) for n in _SPLICE_SKIPS)
        )
    return known


def _scratch(conn: Any, size: int) -> memoryview:
    """A writable buffer of ``size`` bytes owned by ``conn`` (reused per packet)."""
    buf: bytearray | None = conn.__dict__.get("_tuned_scratch")
    if buf is None or len(buf) < size:
        buf = conn._tuned_scratch = bytearray(max(size, 40 * 1024))
    return memoryview(buf)[:size]


def _take_packet(conn: Any, packet: Any, pktlen: int) -> bool:
    """Decrypt and process one data or window packet as stock would.

    ``packet`` is the whole packet (length, ciphertext, tag). It is decrypted
    into the connection's scratch buffer. Channel data is then either spliced
    onto the channel it is relayed to (:func:`_splice`) or delivered as
    ``bytes``; a window adjustment opens the channel's send window and
    flushes what waited for it, as ``_process_window_adjust`` does. Returns
    False, having changed nothing, for anything else, and for anything that
    is not well formed, for an open channel, within its window: the stock
    parser then handles it.
    """
    cipher = conn._recv_encryption._cipher
    iv = cipher._iv
    plain = _scratch(conn, pktlen)
    try:
        gcm_aead(cipher).decrypt_into(iv, packet[4:], packet[:4], plain)
    except InvalidTag:
        return False
    padlen = plain[0]
    pkttype = plain[1]
    if padlen < 4 or pktlen < 10 + padlen:
        return False
    chan = conn._channels.get(int.from_bytes(plain[2:6], "big"))
    if chan is None or not _plain_data_channel(chan):
        return False
    value = int.from_bytes(plain[6:10], "big")
    if pkttype == MSG_CHANNEL_DATA:
        datalen = value
        if (
            datalen + 10 + padlen != pktlen
            or chan._recv_state != "open"
            or datalen > chan._recv_window
        ):
            return False
        cipher._iv = next_iv(iv)
        seq = conn._recv_seq
        if not (datalen and _splice(chan, plain, pktlen, padlen, datalen)):
            chan._accept_data(bytes(plain[10 : 10 + datalen]))
    elif pkttype == MSG_CHANNEL_WINDOW_ADJUST:
        if pktlen != 10 + padlen or chan._recv_state not in _WINDOW_STATES:
            return False
        cipher._iv = next_iv(iv)
        seq = conn._recv_seq
        chan._send_window += value
        chan._flush_send_buf()
    else:
        return False
    conn._auth_final = True
    if conn._transport:
        conn._recv_seq = (seq + 1) & _MASK32
    return True


def _splice(chan: Any, plain: memoryview, pktlen: int, padlen: int, datalen: int) -> bool:
    """Pass a received data packet straight on to the channel it is relayed to.

    A relay's session names that channel in ``splice_target`` (and counts what
    passes with ``spliced(n)``). When the target could take the data at once
    (open, nothing queued before it, window and packet size enough, a
    connection that may send by the short path) and this channel would deliver
    it at once (not paused, nothing buffered), the packet keeps its layout:
    only the channel number and the padding bytes are rewritten before it is
    encrypted for the other connection. That is exactly the packet stock
    ``write`` would build (same header, same padding length, which is
    checked), without the copies and calls between. Windows move as
    ``_accept_data``/``_deliver_data`` and ``_flush_send_buf`` move them.
    Returns False, having changed nothing, when any condition fails.
    """
    session = chan._session
    target = getattr(session, "splice_target", None)
    if (
        target is None
        or target._send_state != "open"
        or target._send_buf
        or target._send_window < datalen
        or target._send_pktsize < datalen
        or chan._recv_paused
        or chan._recv_buf
        or chan._encoding
        or chan._send_state in ("close_pending", "closed")
    ):
        return False
    out = target._conn
    chan_id = target._send_chan
    if out is None or chan_id is None or not _sends_fast(out):
        return False
    # the padding stock send_packet would give this data packet (inlined)
    blocksize = out._send_blocksize
    outpad = -(out._send_enchdrlen + 9 + datalen) % blocksize
    if (outpad + blocksize if outpad < 4 else outpad) != padlen:
        return False
    chan._recv_window -= datalen
    regrant_window(chan, chan._recv_window)
    plain[2:6] = chan_id.to_bytes(4, "big")
    plain[pktlen - padlen :] = padding(padlen)
    target._send_window -= datalen
    _seal(out, plain, pktlen)
    session.spliced(datalen)
    return True


def _stock_parse(conn: Any, packet: bytes) -> None:
    """Hand one whole packet to the stock parser (at a packet boundary)."""
    conn._inpbuf = packet
    while conn._inpbuf and conn._recv_handler():
        pass


def receive(conn: Any, data: bytes) -> Any:
    """Take what it can of a socket read by the short path; return the rest.

    A packet cut by the end of the read is kept in ``_inpbuf`` (where the
    stock parser would find it too) and completed by the next read. What is
    returned is for the stock parser.
    """
    view = memoryview(data)
    pos, n = 0, len(view)
    inp = conn._inpbuf
    if inp:
        # finish the packet that the previous read ended in
        if len(inp) < 4:
            take = min(n, 4 - len(inp))
            inp, pos = inp + view[:take], take
            if len(inp) < 4:
                conn._inpbuf = inp
                return b""
        pktlen = int.from_bytes(inp[:4], "big")
        if pktlen > conn._max_recv_pktlen or pktlen < 12:
            conn._inpbuf = inp
            return view[pos:]
        need = 4 + pktlen + _GCM_TAG - len(inp)
        if need > n - pos:
            conn._inpbuf = inp + view[pos:]
            return b""
        packet = inp + view[pos : pos + need]
        pos += need
        conn._inpbuf = b""
        if not _take_packet(conn, packet, pktlen):
            _stock_parse(conn, packet)
    while pos < n and receiving_fast(conn):
        if n - pos < 4:
            conn._inpbuf = bytes(view[pos:])
            return b""
        pktlen = int.from_bytes(view[pos : pos + 4], "big")
        if pktlen > conn._max_recv_pktlen or pktlen < 12:
            break
        end = pos + 4 + pktlen + _GCM_TAG
        if end > n:
            conn._inpbuf = bytes(view[pos:])
            return b""
        packet = view[pos:end]
        pos = end
        if not _take_packet(conn, packet, pktlen):
            _stock_parse(conn, bytes(packet))
    return view[pos:]
