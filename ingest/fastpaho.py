"""paho-mqtt's Client, reading the socket in large chunks.

paho 2.2 handles one packet per select() wake-up and reads each packet with at least three
recv() calls (type, length, body). At thousands of messages a second that is most of the
ingest worker's CPU. This subclass overrides three of paho's internal methods: `_sock_recv` serves
small reads from a 256 KiB buffer filled by one recv(), and `loop_read` keeps handling packets
while the buffer holds any, and `_handle_on_message` skips the per-message topic matcher
(we register no per-topic callbacks). Everything else (protocol, sessions, acks, reconnects)
is paho's.
The lock file pins paho; the whole ingest suite runs through this class.
"""

from __future__ import annotations

from typing import Any

import paho.mqtt.client as mqtt

_CHUNK = 256 * 1024


class BufferedClient(mqtt.Client):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rpos = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rpos >= len(self._rbuf):
            self._rbuf = super()._sock_recv(_CHUNK)  # raises BlockingIOError when empty
            self._rpos = 0
            if not self._rbuf:
                return b""  # connection closed: paho handles it
        data = self._rbuf[self._rpos : self._rpos + bufsize]
        self._rpos += len(data)
        return data

    def loop_read(self, max_packets: int = 1) -> mqtt.MQTTErrorCode:
        rc = super().loop_read(max_packets)
        while (
            rc == mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS
            and self._rpos < len(self._rbuf)
            and self._sock is not None
        ):
            rc = super().loop_read(max_packets)
        return rc

    def _handle_on_message(self, message: mqtt.MQTTMessage) -> None:
        # oximon registers no per-topic callbacks: skip paho's topic matcher on every message.
        on_message = self.on_message
        if on_message is not None:
            with self._in_callback_mutex:
                on_message(self, self._userdata, message)

    def reconnect(self) -> mqtt.MQTTErrorCode:
        # Bytes left from the old connection must never be read as the new one's.
        self._rbuf, self._rpos = b"", 0
        return super().reconnect()
