"""Publish: the one thread that owns the MQTT connection.

paho-mqtt is not fully thread-safe, so no other thread touches the client: camera pipelines
call :meth:`MqttPublisher.publish_event` / :meth:`publish_snapshot` / :meth:`publish`, which
persist durable messages in the outbox (:mod:`agent.outbox`) and append to a send queue. The
thread connects (with exponential backoff and jitter), sends the birth messages (retained
``status`` online, state, camera statuses) on every connect, and drains the queue while
connected, at most ``max_inflight`` unacknowledged messages at a time (that window is the replay
rate bound: paho would otherwise take a whole backlog into its memory at once). A message leaves
the outbox only on the broker's PUBACK; paho re-sends unacknowledged ones after a reconnect,
and a restarted agent replays what its outbox still holds, so delivery is at least once, in
order. Retained state messages are not persisted (they are rebuilt on connect) and only the
newest per topic waits; metrics (QoS 0) are dropped while disconnected, and counted.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config import MqttConfig
from agent.connection import authenticate, describe_connect_error, describe_refusal
from agent.errors import CONFIG_NAMES
from agent.messages import Message
from agent.outbox import Entry, Outbox

log = logging.getLogger(__name__)

SESSION_EXPIRY_S = 3600
LOOP_TIMEOUT_S = 0.02
ACK_FLUSH_S = 0.05
ACK_FLUSH_ROWS = 500


@dataclass
class PublisherStats:
    published: int = 0
    acked: int = 0
    dropped_qos0: int = 0
    connects: int = 0
    replayed: int = 0
    connect_failures: int = 0


class MqttPublisher(threading.Thread):
    def __init__(
        self,
        config: MqttConfig,
        *,
        client_id: str,
        will_topic: str,
        birth: Callable[[], list[Message]],
        outbox: Outbox,
        subscriptions: tuple[str, ...] = (),
        inbound: Callable[[mqtt.MQTTMessage], None] | None = None,
    ) -> None:
        super().__init__(name="mqtt-publisher", daemon=True)
        self.config = config
        self.will_topic = will_topic
        self.birth = birth
        self.outbox = outbox
        self.subscriptions = subscriptions
        self.inbound = inbound
        self.stats = PublisherStats()
        self._lock = threading.Lock()
        self._queue: deque[Entry] = deque(outbox.pending())  # what a previous run left undelivered
        self.stats.replayed = len(self._queue)
        if self._queue:
            log.info("outbox: %d message(s) from before the restart will be sent first", len(self._queue))
        self._inflight: dict[int, Entry] = {}
        self._acked_rows: list[int] = []
        self._last_flush = 0.0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._stop_deadline = 0.0
        self._connected = False
        self._socket_open = False
        self._backoff = 1.0
        self._next_attempt = 0.0
        #: monotonic time of the last turn of the loop, for the watchdog (agent.health)
        self.heartbeat = time.monotonic()
        self._client = self._make_client(client_id)

    # -- called from any thread ---------------------------------------------------------
    def publish(self, message: Message, on_acked: Callable[[], None] | None = None) -> None:
        """Queue a message that need not survive a restart (status, state, metrics).

        A retained one replaces a queued older one on the same topic; QoS 0 messages are
        dropped while disconnected. ``on_acked`` is called (on the publisher thread) once the
        broker acknowledged a QoS 1 message; never if it was replaced, not delivered or refused.
        """
        if message.qos == 0 and not self._connected:
            self.stats.dropped_qos0 += 1
            return
        with self._lock:
            if message.retain:
                for index, entry in enumerate(self._queue):
                    if entry.row is None and entry.message.retain and entry.message.topic == message.topic:
                        del self._queue[index]
                        break
            self._queue.append(Entry(message, "state", None, on_acked))
        self._wake.set()

    def publish_event(self, topic: str, event: dict[str, Any]) -> int:
        """Stamp the event with the device's next ``seq``, persist it and queue it; returns the seq."""
        with self._lock:
            self._queue.append(self.outbox.add_event(topic, event))
        self._wake.set()
        return event["seq"]

    def publish_snapshot(self, message: Message) -> None:
        """Persist and queue a snapshot; past the snapshot quota the oldest unsent ones go."""
        with self._lock:
            self._queue.append(self.outbox.add(message, "snapshot"))
            protected = {entry.row for entry in self._inflight.values() if entry.row is not None}
            dropped = set(self.outbox.drop_oldest_snapshots(protected))
            if dropped:
                self._queue = deque(entry for entry in self._queue if entry.row not in dropped)
                log.warning("outbox: snapshot quota reached; dropped %d old snapshot(s)", len(dropped))
        self._wake.set()

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def pending(self) -> int:
        """Messages queued or sent and not yet acknowledged by the broker."""
        with self._lock:
            return len(self._queue) + len(self._inflight)

    def close(self, timeout: float = 5.0) -> int:
        """Deliver what is queued (within ``timeout``), mark ``status`` offline, disconnect.

        Returns how many messages were left undelivered (durable ones stay in the outbox).
        """
        self._stop_deadline = time.monotonic() + timeout
        self._stopping.set()
        self._wake.set()
        self.join(timeout + 3)
        self.outbox.close()
        return self.pending

    # -- the publisher thread -----------------------------------------------------------
    def _make_client(self, client_id: str) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        client.connect_timeout = self.config.connect_timeout_s
        client.max_inflight_messages_set(self.config.max_inflight)
        client.will_set(self.will_topic, b"offline", qos=1, retain=True)
        authenticate(client, self.config, CONFIG_NAMES)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    def run(self) -> None:
        while True:
            self._flush_acks()
            self.heartbeat = time.monotonic()
            if self._stopping.is_set() and (self._drained() or time.monotonic() > self._stop_deadline):
                break
            if not self._socket_open:
                if time.monotonic() >= self._next_attempt:
                    self._connect()
                if not self._socket_open:
                    self._wake.wait(0.1)
                    self._wake.clear()
                    continue
            if self._connected:
                self._send_queued()
            rc = self._client.loop(timeout=LOOP_TIMEOUT_S)
            if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_AGAIN):
                self._lost(f"network loop: {mqtt.error_string(rc)}")
        self._flush_acks(force=True)
        self._say_goodbye()

    def _drained(self) -> bool:
        return self.pending == 0 or not self._connected

    def _flush_acks(self, *, force: bool = False) -> None:
        """Delete acknowledged rows from the outbox, one transaction per batch.

        Batches are flushed every ``ACK_FLUSH_S`` or ``ACK_FLUSH_ROWS`` rows, so a replayed backlog
        costs a handful of disk syncs rather than one per message. A row whose deletion a power
        cut undoes is sent again: a duplicate, never a loss.
        """
        now = time.monotonic()
        with self._lock:
            due = force or len(self._acked_rows) >= ACK_FLUSH_ROWS or now - self._last_flush >= ACK_FLUSH_S
            if not due or not self._acked_rows:
                return
            rows, self._acked_rows = self._acked_rows, []
            self._last_flush = now
        self.outbox.delivered(rows)

    def _connect(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        where = f"{self.config.host}:{self.config.port}"
        try:
            self._client.connect(
                self.config.host, self.config.port, self.config.keepalive_s,
                clean_start=False, properties=props,
            )
        except (OSError, ValueError) as error:
            cause = describe_connect_error(error, CONFIG_NAMES, self.config.tls is not None)
            self._schedule_retry(f"MQTT broker {where} unreachable: {cause}")
            return
        self._socket_open = True

    def _schedule_retry(self, reason: str) -> None:
        self.stats.connect_failures += 1
        delay = self._backoff * random.uniform(0.8, 1.2)
        log.warning("%s; retrying in %.1f s", reason, delay)
        self._next_attempt = time.monotonic() + delay
        self._backoff = min(self._backoff * 2, self.config.reconnect_max_s)

    def _lost(self, reason: str) -> None:
        was_connected = self._connected
        self._connected = False
        self._socket_open = False
        try:
            self._client.disconnect()
        except Exception:  # noqa: BLE001, S110 - the socket is already gone; nothing to clean up
            pass
        if was_connected or not self._stopping.is_set():
            self._schedule_retry(f"MQTT connection lost ({reason})")

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        where = f"{self.config.host}:{self.config.port}"
        if reason.is_failure:
            self._socket_open = False
            cause = describe_refusal(reason, CONFIG_NAMES)
            self._schedule_retry(f"MQTT broker {where} refused the connection: {cause}")
            return
        self._connected = True
        self._backoff = 1.0
        self.stats.connects += 1
        log.info("MQTT connected to %s", where)
        # Subscribe first: a subscriber that sees our birth messages may send requests at once.
        if self.subscriptions:
            client.subscribe([(topic, 1) for topic in self.subscriptions])
        for message in self.birth():
            self._send(Entry(message, "state", None))

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        """Hand requests to whoever handles them (quickly: this runs on the MQTT thread)."""
        if self.inbound is not None:
            self.inbound(message)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if self._connected:
            self._connected = False
            self._socket_open = False
            if not self._stopping.is_set():
                self._schedule_retry(f"MQTT disconnected ({reason})")

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self._lock:
            entry = self._inflight.pop(mid, None)
            if entry is not None:
                self.stats.acked += 1
                if entry.row is not None:
                    self._acked_rows.append(entry.row)
        if entry is None:
            return
        if getattr(reason, "is_failure", False):  # an MQTT 5 PUBACK that refuses it (e.g. the ACL)
            log.warning("the broker refused %s: %s", entry.message.topic, reason)
        elif entry.on_acked is not None:
            try:
                entry.on_acked()
            except Exception:  # the publisher thread must not die of a caller's hook
                log.exception("after the broker acknowledged %s", entry.message.topic)

    def _send_queued(self) -> None:
        while self._connected:
            with self._lock:
                if not self._queue or len(self._inflight) >= self.config.max_inflight:
                    return
                entry = self._queue.popleft()
            self._send(entry)

    def _send(self, entry: Entry) -> None:
        message = entry.message
        info = self._client.publish(
            message.topic, message.payload, qos=message.qos, retain=message.retain,
            properties=message.properties(),
        )
        self.stats.published += 1
        if message.qos > 0:
            with self._lock:
                self._inflight[info.mid] = entry
        elif info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.stats.dropped_qos0 += 1

    def _say_goodbye(self) -> None:
        if not self._connected:
            return
        info = self._client.publish(self.will_topic, b"offline", qos=1, retain=True)
        deadline = time.monotonic() + 2.0
        while not info.is_published() and time.monotonic() < deadline and self._connected:
            self._client.loop(timeout=LOOP_TIMEOUT_S)
        self._connected = False
        self._client.disconnect()
