"""Targeted fixes to asyncssh's channel and packet code for the gateway's relaying.

Applied explicitly by :meth:`GatewayServer.start`, and only when asyncssh is
exactly :data:`PINNED_VERSION` *and* the source of every function a fix
replaces (or relies on) is the one the fix was written against: otherwise this
module logs a warning and leaves asyncssh stock. Fixes are applied all
together or not at all. ``tests/unit/gateway/test_gateway_tuning.py`` fails
loudly when asyncssh changes underneath.

Each fix replaces one asyncssh function; :data:`PATCHES` lists them with the
sha256 of the stock source they replace and why. In short:

* **Window re-opening after ``resume_reading()``** (``SSHChannel._deliver_data``):
  only re-grant window for data actually delivered, so a relay that pauses
  often does not let memory grow without bound.
* **No per-packet log formatting** (``SSHPacketLogger._log_packet``): the
  packet log line is only built when packet logging (debug level 3) is on.
* **No ``MSG_IGNORE`` before every packet with AEAD ciphers**
  (``SSHConnection.send_packet``): that empty packet is a CBC-mode
  countermeasure; with AES-GCM or chacha20-poly1305 it only doubles the
  encryptions and socket writes. It is still sent with other ciphers.
* **One socket write per event-loop iteration** (``SSHConnection._send``):
  packets are gathered and written in one ``transport.write`` at the end of
  the current iteration, instead of one system call per packet.
* **AES-GCM context reused** (``GCMCipher.encrypt_and_sign`` and
  ``verify_and_decrypt``): the ``AESGCM`` object is built once per key rather
  than per packet.
* **Received data parsed in bounded slices** (``SSHConnection.data_received``):
  stock asyncssh appends a whole socket read to its input buffer and then
  re-copies the rest of the buffer for every packet it takes off the front,
  which is quadratic in the read size; feeding it in packet-sized slices keeps
  those copies small.
* **A short path for channel data over AES-GCM** (``SSHChannel.write``,
  ``SSHChannel._flush_send_buf`` and, in ``data_received``, the receive
  side): data packets are queued, built, encrypted, decrypted and dispatched
  without the per-layer copies; see
  :mod:`sandman.gateway.tuning.datapath`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncssh
from asyncssh.channel import SSHChannel
from asyncssh.connection import SSHConnection
from asyncssh.constants import (
    MSG_DEBUG,
    MSG_IGNORE,
    MSG_KEX_LAST,
    MSG_NEWKEYS,
    MSG_SERVICE_ACCEPT,
    MSG_SERVICE_REQUEST,
    MSG_USERAUTH_BANNER,
    MSG_USERAUTH_LAST,
)
from asyncssh.crypto.cipher import GCMCipher
from asyncssh.encryption import ChachaEncryption, GCMEncryption
from asyncssh.misc import DisconnectError, ProtocolError
from asyncssh.packet import Byte, SSHPacketHandler, SSHPacketLogger, String, UInt32
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sandman.gateway.tuning import datapath

log = logging.getLogger(__name__)

PINNED_VERSION = "2.24.1"


# -- the replacements -----------------------------------------------------------


def _deliver_data(self: Any, data: bytes, datatype: int | None) -> None:
    """``SSHChannel._deliver_data`` that does not re-grant still-buffered bytes."""
    buffered = sum(len(d) for d, _ in self._recv_buf) if self._recv_buf else 0
    datapath.regrant_window(self, self._recv_window + buffered)
    if self._encoding:
        try:
            decoded = self._decoder.decode(data)
        except UnicodeDecodeError as exc:
            raise asyncssh.ProtocolError(str(exc)) from None
    else:
        decoded = data
    if self._session is not None:
        self._session.data_received(decoded, datatype)


_STOCK_LOG_PACKET = SSHPacketLogger.__dict__["_log_packet"]


def _log_packet(
    self: Any, msg: str, pkttype: int, pktid: int | None, packet: Any, note: str
) -> None:
    """``SSHPacketLogger._log_packet`` that formats nothing unless packets are logged.

    Stock asyncssh builds the message (handler name, plural, note) for every
    packet and only then lets ``SSHLogger.packet`` drop it below debug level 3;
    here the stock function runs only when the line would be written.
    """
    logger = self.logger
    if getattr(logger, "_debug_level", 3) < 3 or not logger.isEnabledFor(logging.DEBUG):
        return
    _STOCK_LOG_PACKET(self, msg, pkttype, pktid, packet, note)


_AEAD_ENCRYPTIONS = (GCMEncryption, ChachaEncryption)
_DEFER_BEFORE_KEX = frozenset({MSG_DEBUG, MSG_SERVICE_REQUEST, MSG_SERVICE_ACCEPT})


def _send_packet(self: Any, pkttype: int, *args: bytes, handler: Any = None) -> None:
    """``SSHConnection.send_packet`` without the per-packet ``MSG_IGNORE`` for AEAD.

    Stock asyncssh puts an empty ``MSG_IGNORE`` in front of every packet once
    encryption is on (a countermeasure for CBC modes, whose next IV is
    otherwise predictable). AEAD ciphers take a fresh nonce per packet and
    gain nothing from it, so it is only kept for the other ciphers. The
    encrypted packet and its MAC are also handed to ``_send`` separately
    rather than concatenated first. Everything else is as stock.
    """
    if (
        self._auth_complete
        and self._kex_complete
        and (
            self._rekey_bytes_sent >= self._rekey_bytes
            or (self._rekey_seconds and time.monotonic() >= self._rekey_time)
        )
    ):
        self._send_kexinit()
        self._kexinit_sent = True

    if (
        ((pkttype in _DEFER_BEFORE_KEX or pkttype > MSG_KEX_LAST) and not self._kex_complete)
        or (pkttype == MSG_USERAUTH_BANNER and not (self._auth_in_progress or self._auth_complete))
        or (pkttype > MSG_USERAUTH_LAST and not self._auth_complete)
    ):
        self._deferred_packets.append((pkttype, args))
        return

    encryption = self._send_encryption
    if encryption and pkttype > MSG_KEX_LAST and not isinstance(encryption, _AEAD_ENCRYPTIONS):
        self.send_packet(MSG_IGNORE, String(b""))

    orig_payload = Byte(pkttype) + b"".join(args)

    if self._compressor and (self._auth_complete or not self._compress_after_auth):
        payload = self._compressor.compress(orig_payload)
        if payload is None:  # pragma: no cover
            raise asyncssh.CompressionError("Compression failed")
    else:
        payload = orig_payload

    padlen = -(self._send_enchdrlen + len(payload)) % self._send_blocksize
    if padlen < 4:
        padlen += self._send_blocksize

    packet = b"".join((Byte(padlen), payload, os.urandom(padlen)))
    pktlen = len(packet)
    hdr = UInt32(pktlen)
    seq = self._send_seq

    if encryption:
        packet, mac = encryption.encrypt_packet(seq, hdr, packet)
        self._send(packet)
        self._send(mac)
    else:
        self._send(hdr + packet)

    if self._send_seq == 0xFFFFFFFF and not encryption:
        self._send_seq = 0
        raise ProtocolError("Sequence rollover before kex complete")

    if pkttype == MSG_NEWKEYS and self._strict_kex:
        self._send_seq = 0
    else:
        self._send_seq = (seq + 1) & 0xFFFFFFFF

    if self._kex_complete:
        self._rekey_bytes_sent += pktlen

    if not handler:
        handler = self

    handler.log_sent_packet(pkttype, seq, orig_payload)


def _send(self: Any, data: bytes) -> None:
    """``SSHConnection._send`` that writes once per event-loop iteration.

    Data is gathered per connection and written with a single
    ``transport.write`` from a ``call_soon`` callback, so a burst of packets
    (one socket read can relay several) costs one system call instead of one
    per packet (two with ``MSG_IGNORE``). Ordering is kept: the flush is
    queued before anything ``_force_close`` queues (its ``abort``), and it
    writes to the transport that was current when the data was sent.
    """
    transport = self._transport
    if not transport:
        return
    pending: list[bytes] | None = self.__dict__.get("_tuned_pending")
    if pending is None:
        pending = [data]
        self._tuned_pending = pending
        self._loop.call_soon(_flush_pending, self, transport, pending)
    else:
        pending.append(data)


def _flush_pending(conn: Any, transport: asyncio.Transport, pending: list[bytes]) -> None:
    """Write what ``_send`` gathered during the last event-loop iteration."""
    if conn.__dict__.get("_tuned_pending") is pending:
        conn._tuned_pending = None
    if transport.is_closing():
        return  # the connection was lost meanwhile: stock would drop it too
    with contextlib.suppress(ConnectionError):
        transport.write(pending[0] if len(pending) == 1 else b"".join(pending))


_RECV_SLICE = 32 * 1024
_KEEPALIVE_RESET_S = 1.0


def _data_received(self: Any, data: bytes, datatype: Any = None) -> None:
    """``SSHConnection.data_received`` feeding the parser in bounded slices.

    Stock asyncssh appends the whole read to ``_inpbuf`` and then slices each
    packet off its front, re-copying the rest of the buffer twice per packet:
    a 256 KiB read of 32 KiB packets copies about 2 MiB. Feeding it at most
    :data:`_RECV_SLICE` bytes at a time keeps the buffer near one packet. The
    body is otherwise stock ``_recv_data`` (keepalive reset, parse loop and
    error handling). Channel data over AES-GCM is first taken by
    :func:`datapath.receive`.

    Stock re-arms the keepalive timer (a cancelled timer and a new one on the
    event loop's heap) for every read; here at most once per
    :data:`_KEEPALIVE_RESET_S`, so a keepalive is sent at most that much
    sooner after the last data. The timer is armed when authentication
    completes, as stock.
    """
    now = self._loop.time()
    if now - self.__dict__.get("_tuned_keepalive_reset", -_KEEPALIVE_RESET_S) >= _KEEPALIVE_RESET_S:
        self._tuned_keepalive_reset = now
        self._reset_keepalive_timer()
    try:
        if datapath.receiving_fast(self):
            data = datapath.receive(self, data)
        view = memoryview(data)
        for start in range(0, len(view), _RECV_SLICE):
            self._inpbuf += view[start : start + _RECV_SLICE]
            while self._inpbuf and self._recv_handler():
                pass
    except DisconnectError as exc:
        self._send_disconnect(exc.code, exc.reason, exc.lang)
        self._force_close(exc)
    except Exception:
        self.internal_error()


_GCM_MAC_SIZE = 16


def _gcm_encrypt_and_sign(self: Any, header: bytes, data: bytes) -> tuple[bytes, bytes]:
    """``GCMCipher.encrypt_and_sign`` reusing one ``AESGCM`` per key."""
    data = datapath.gcm_aead(self).encrypt(self._iv, data, header)
    self._update_iv()
    return header + data[:-_GCM_MAC_SIZE], data[-_GCM_MAC_SIZE:]


def _gcm_verify_and_decrypt(self: Any, header: bytes, data: bytes, mac: bytes) -> bytes | None:
    """``GCMCipher.verify_and_decrypt`` reusing one ``AESGCM`` per key."""
    try:
        decrypted: bytes | None = datapath.gcm_aead(self).decrypt(self._iv, data + mac, header)
    except InvalidTag:
        decrypted = None
    self._update_iv()
    return decrypted


# -- registry -------------------------------------------------------------------


@dataclass(frozen=True)
class Patch:
    """One asyncssh function replaced, and the stock source it was written against."""

    owner: type
    name: str
    sha256: str
    replacement: Callable[..., Any] | None  # None: relied on, not replaced

    @property
    def key(self) -> str:
        return f"{self.owner.__name__}.{self.name}"


PATCHES: tuple[Patch, ...] = (
    Patch(
        SSHChannel,
        "_deliver_data",
        "bd94ccbaa59ab51048f695e4830ba02d0bb9af4cc44dfeb19a63a7afde35e74b",
        _deliver_data,
    ),
    Patch(
        SSHPacketLogger,
        "_log_packet",
        "f3263d7da93663f1a3825d53a0ef71122da1168957e28d0b84dc20a3bba0c45c",
        _log_packet,
    ),
    Patch(
        SSHConnection,
        "send_packet",
        "fb9da7bec6dd395a2f379f8a0f4dbfc5f194ff80e1ed8630d9a6dbf291359406",
        _send_packet,
    ),
    Patch(
        SSHConnection,
        "_send",
        "c6698a37eb80f574e53595c650f493b6ef52576a411dabc1b2977ba2e3e7b5b3",
        _send,
    ),
    Patch(
        SSHConnection,
        "data_received",
        "b2d14a83b2604db65c8775264dfbe38e5920ba749ec627134ddbe708cb43974a",
        _data_received,
    ),
    Patch(
        GCMCipher,
        "encrypt_and_sign",
        "adb87dbdb4f9039ab1f0029bd845b032bd6571d2ae894c7b067ea1f62bb0726e",
        _gcm_encrypt_and_sign,
    ),
    Patch(
        GCMCipher,
        "verify_and_decrypt",
        "c09eb5b36d0f6a92a6df6430e70d479dbd6354f3403b98b65e9dc9ecccc37b52",
        _gcm_verify_and_decrypt,
    ),
    Patch(
        SSHChannel,
        "_flush_send_buf",
        "3f11e9dc27c58b18847c12007b945cb36c7767def131c9b96b0c0a81a8b72dbc",
        datapath.flush_send_buf,
    ),
    Patch(
        SSHChannel,
        "write",
        "1045e200084699330b3c75abe2e63e760dc8a12eb008c85ec5cefcafab372e38",
        datapath.channel_write,
    ),
    # Not replaced, but the replacements rely on how these behave:
    # _data_received inlines _recv_data and needs the parsers to consume
    # _inpbuf from the front; _send needs _force_close to abort the transport
    # with call_soon (after an already queued flush).
    Patch(
        SSHConnection,
        "_recv_data",
        "fc4e0735191bb0fdd7fa8f91761067015989bfa47246ac1843c9abaeef7d243f",
        None,
    ),
    Patch(
        SSHConnection,
        "_recv_pkthdr",
        "7adc4d88fe20593cef39c00322547733a2d81f0aed40924e6105d5f57aa2a820",
        None,
    ),
    Patch(
        SSHConnection,
        "_recv_packet",
        "b3daa22e9763eee9f3ec710d1469c1b54c8df5066bae3e65b66bdf1db8063c8b",
        None,
    ),
    Patch(
        SSHConnection,
        "_force_close",
        "264b4367525f4f864cf63d560aab5e027527a95d5225ede1dba01161010e07dc",
        None,
    ),
    Patch(
        GCMCipher,
        "_update_iv",
        "bce250a8d9dc82b6aa456657118d8773477e693b34cdb7f5d34da34e76ccba6d",
        None,
    ),
    # The data short path does what these do for data packets, and relies on
    # the state they keep (IV, sequence numbers, windows, handler tables).
    Patch(
        GCMCipher,
        "__init__",
        "8dbe9e768f4ecf7a4bac1641c2e574c2914e72c8c06d47eeb81f1355bc44c6a3",
        None,
    ),
    Patch(
        GCMEncryption,
        "encrypt_packet",
        "6a59190103eaab06f3c5eed1854732ea902e2cb994ede0ec50ed221a9a018373",
        None,
    ),
    Patch(
        GCMEncryption,
        "decrypt_packet",
        "6feb840baa1102a45480a86f2bba0c24c1cb17d2baef0baefcb6b6bad7217ecb",
        None,
    ),
    Patch(
        SSHConnection,
        "_finish_recv_packet",
        "e12d96db58b3524e90032440bfd6f2705a53a3b74caaa121e14b7d164ad2e6de",
        None,
    ),
    Patch(
        SSHChannel,
        "_process_data",
        "342490795c4b893cbff8868df9c32b79230f0fd881b7fa435afd267e3ce22586",
        None,
    ),
    Patch(
        SSHChannel,
        "_process_window_adjust",
        "7a2e4c4998e0b496a3006855fb24693092ee4950dce3bc0969ca42092913dff2",
        None,
    ),
    Patch(
        SSHChannel,
        "_accept_data",
        "33121e9e185c98506d75d35b326b5e849ac6e76a92af56299be96e5cb5017ede",
        None,
    ),
    Patch(
        SSHChannel,
        "send_packet",
        "00e81b763c8f3dd2f3012a14cb28f5824ab653940b03f548abad871db918c0ae",
        None,
    ),
    Patch(
        SSHPacketHandler,
        "process_packet",
        "490a59d971d0ce03dbdc81e9e9a582830041e9a69f3af76dd4323886e493f4ae",
        None,
    ),
)

_originals: dict[str, Any] = {}


def source_digest(func: Any) -> str:
    """sha256 of a function's source ("" when the source is not installed)."""
    try:
        return hashlib.sha256(inspect.getsource(func).encode()).hexdigest()
    except (OSError, TypeError):
        return ""


def _stock(patch: Patch) -> Any:
    return _originals.get(patch.key) or patch.owner.__dict__[patch.name]


def mismatches() -> list[str]:
    """The patched (or relied-on) functions whose stock source is not the expected one."""
    return [p.key for p in PATCHES if source_digest(_stock(p)) != p.sha256]


def is_supported() -> bool:
    """Whether the installed asyncssh is exactly what these fixes target."""
    return (
        asyncssh.__version__ == PINNED_VERSION
        and hasattr(AESGCM, "decrypt_into")  # cryptography >= 47
        and not mismatches()
    )


def is_applied() -> bool:
    return bool(_originals)


def apply() -> bool:
    """Install all the fixes once; return whether asyncssh is now tuned."""
    if is_applied():
        return True
    if not is_supported():
        log.warning(
            "asyncssh %s is not the pinned %s (or its code differs: %s); "
            "relaying with stock asyncssh",
            asyncssh.__version__,
            PINNED_VERSION,
            ", ".join(mismatches()) or "-",
        )
        return False
    for patch in PATCHES:
        if patch.replacement is not None:
            _originals[patch.key] = patch.owner.__dict__[patch.name]
    for patch in PATCHES:
        if patch.replacement is not None:
            setattr(patch.owner, patch.name, patch.replacement)
    log.info("asyncssh %s tuned for relaying", PINNED_VERSION)
    return True


def revert() -> None:
    """Put stock asyncssh back (for tests)."""
    for patch in PATCHES:
        original = _originals.pop(patch.key, None)
        if original is not None:
            setattr(patch.owner, patch.name, original)
