"""A minimal MQTT 3.1.1 QoS 1 publisher over a plain socket, for load generation.

paho-mqtt as a publisher tops out near 8–9k messages/s on this kind of machine; encoding
PUBLISH packets directly lets one process offer several times that, so the benchmark measures
the platform and not the generator. It speaks only what it needs: CONNECT, PUBLISH (QoS 1),
PUBACK counting, DISCONNECT.
"""

from __future__ import annotations

import socket
import struct
import threading


class MqttRefusedError(ConnectionError):
    pass


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(s: str | bytes) -> bytes:
    data = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(data)) + data


def connect_packet(client_id: str, username: str | None, password: str | None) -> bytes:
    flags = 0x02  # clean session
    payload = _string(client_id)
    if username is not None:
        flags |= 0x80
        payload += _string(username)
    if password is not None:
        flags |= 0x40
        payload += _string(password)
    variable = _string("MQTT") + bytes([4, flags]) + struct.pack("!H", 0)  # keep-alive off
    body = variable + payload
    return b"\x10" + _varint(len(body)) + body


def publish_packet(topic: bytes, payload: bytes, packet_id: int) -> bytes:
    body_len = 2 + len(topic) + 2 + len(payload)
    return (
        b"\x32"
        + _varint(body_len)
        + struct.pack("!H", len(topic))
        + topic
        + struct.pack("!H", packet_id)
        + payload
    )


class RawPublisher:
    """One connection. `publish_many` writes packets in one send; a reader thread counts
    PUBACKs so the caller knows how many the broker has taken responsibility for."""

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(connect_packet(client_id, username, password))
        connack = self._read_exact(4)
        if connack[0] != 0x20 or connack[3] != 0:
            raise MqttRefusedError(f"CONNACK return code {connack[3]}")
        self.sock.settimeout(None)
        self.acked = 0
        self._next_id = 1
        self._closed = False
        self._reader = threading.Thread(target=self._read_acks, daemon=True)
        self._reader.start()

    def _read_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("broker closed the connection")
            data += chunk
        return data

    def _read_acks(self) -> None:
        buffer = b""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return
                buffer += chunk
                # PUBACK is always 4 bytes (0x40 0x02 id id); PINGRESP 2 bytes.
                i = 0
                count = 0
                while i + 2 <= len(buffer):
                    kind = buffer[i]
                    if kind == 0x40 and i + 4 <= len(buffer):
                        count += 1
                        i += 4
                    elif kind == 0xD0:
                        i += 2
                    elif kind == 0x40:
                        break
                    else:
                        raise ConnectionError(f"unexpected packet type {kind:#x}")
                buffer = buffer[i:]
                self.acked += count
        except OSError:
            if not self._closed:
                raise

    def publish_many(self, messages: list[tuple[bytes, bytes]]) -> None:
        packets = []
        for topic, payload in messages:
            packets.append(publish_packet(topic, payload, self._next_id))
            self._next_id = self._next_id % 65535 + 1
        self.sock.sendall(b"".join(packets))

    def close(self) -> None:
        self._closed = True
        try:
            self.sock.sendall(b"\xe0\x00")
            self.sock.close()
        except OSError:
            pass
