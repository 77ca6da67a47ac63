"""The alert subscriber: prints events and clip announcements as they arrive, saves snapshots,
finds gaps and duplicates.

Subscribes to one device or the whole fleet (``+``). Each device numbers its event messages with
a rising ``seq``, so a missing number is a lost message and a repeated one, for the same event
``id`` and ``type``, a duplicate (QoS 1 delivers at least once).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import paho.mqtt.client as mqtt

from agent.config import MqttConfig
from agent.connection import command_client, connect_or_fail

log = logging.getLogger(__name__)

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


#: How many of a device's latest numbers :class:`SeqTracker` remembers the event of.
SEQ_MEMORY = 4096


@dataclass
class SeqTracker:
    """Per-device bookkeeping of event ``seq`` numbers.

    A number seen again is a duplicate only if it numbers the same message (event ``id`` and
    ``type``): a device that could not keep its numbers across a restart (no writable disk) hands
    them out again for new events, and those are news, not copies.
    """

    highest: dict[str, int] = field(default_factory=dict)
    missing: dict[str, set[int]] = field(default_factory=dict)
    #: Per device: seq -> the (id, type) it numbered, for the latest SEQ_MEMORY numbers.
    numbered: dict[str, dict[int, tuple[str, str]]] = field(default_factory=dict)
    duplicates: int = 0
    #: Times a device started its numbers again, and the numbers still missing from before.
    restarts: int = 0
    lost_before_restarts: int = 0

    def see(self, device: str, seq: int, message: tuple[str, str]) -> str | None:
        """Record that ``seq`` numbers ``message`` (its id and type); returns a warning if it
        reveals a gap, a duplicate or numbers starting again."""
        numbered = self.numbered.setdefault(device, {})
        missing = self.missing.setdefault(device, set())
        earlier = numbered.get(seq)
        if earlier == message:
            self.duplicates += 1
            return f"duplicate: seq {seq} seen before"
        if earlier is not None:  # the numbers so far belong to the device's previous run
            self.restarts += 1
            self.lost_before_restarts += len(missing)
            numbered.clear()
            missing.clear()
            del self.highest[device]
        numbered[seq] = message
        if len(numbered) > SEQ_MEMORY:
            del numbered[next(iter(numbered))]  # the oldest remembered
        highest = self.highest.get(device)
        if highest is None or seq > highest:
            self.highest[device] = seq
        if earlier is not None:
            return (f"seq {seq} numbers a new message: the device started its numbers again "
                    "(a restart without a writable state_dir?)")
        if highest is None or seq == highest + 1:
            return None
        if seq > highest:
            missing.update(range(highest + 1, seq))
            return f"gap: {seq - highest - 1} event message(s) missing before seq {seq}"
        if seq in missing:
            missing.discard(seq)  # late, not lost
            return None
        self.duplicates += 1  # a number older than those remembered
        return f"duplicate: seq {seq} seen before"

    @property
    def gaps(self) -> int:
        return self.lost_before_restarts + sum(len(m) for m in self.missing.values())


@dataclass
class ListenResult:
    events: list[dict[str, Any]] = field(default_factory=list)
    snapshots: list[Path] = field(default_factory=list)
    statuses: dict[str, str] = field(default_factory=dict)
    seq: SeqTracker = field(default_factory=SeqTracker)


class Listener:
    def __init__(
        self,
        broker: MqttConfig,
        *,
        base: str = "edge",
        device: str = "+",
        snapshot_dir: Path | None = None,
        out: TextIO | None = None,
        as_json: bool = False,
        on_event: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.broker, self.base, self.device = broker, base, device
        self.snapshot_dir = snapshot_dir
        self.out = out
        self.as_json = as_json
        self.on_event = on_event
        self.result = ListenResult()
        self.subscribed = threading.Event()
        #: Set by :meth:`request_stop`, from a signal handler: a plain attribute, no lock to wait on.
        self._stop_requested = False
        self._client = command_client(broker)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_subscribe = lambda *args: self.subscribed.set()

    def _print(self, line: str) -> None:
        if self.out is not None:
            print(line, file=self.out, flush=True)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self._print(f"broker refused the connection: {reason}")
            return
        root = f"{self.base}/{self.device}"
        client.subscribe([(f"{root}/status", 1), (f"{root}/+/status", 1), (f"{root}/+/event", 1),
                          (f"{root}/+/tamper", 1), (f"{root}/+/clip", 1), (f"{root}/+/snapshot", 1)])

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        parts = message.topic.split("/")
        try:
            if parts[-1] in ("event", "tamper", "clip"):
                self._handle_event(message)
            elif parts[-1] == "snapshot":
                self._handle_snapshot(parts[-3], parts[-2], message)
            elif parts[-1] == "status":
                who = "/".join(parts[1:-1])
                state = message.payload.decode(errors="replace")
                # Status is retained and idempotent: a device may publish it again (its birth
                # messages repeat what it queued while connecting); print changes only.
                changed = self.result.statuses.get(who) != state
                self.result.statuses[who] = state
                if changed and not self.as_json:
                    self._print(f"{_now()}  {who:<24} status {state}")
        except (ValueError, KeyError, TypeError) as error:
            self._print(f"{_now()}  malformed message on {message.topic}: {error}")

    def _handle_event(self, message: mqtt.MQTTMessage) -> None:
        event = json.loads(message.payload)
        if not isinstance(event, dict):
            raise TypeError("event is not a JSON object")
        self.result.events.append(event)
        warning = self.result.seq.see(str(event["device"]), int(event["seq"]), (str(event["id"]), str(event["type"])))
        if self.as_json:
            self._print(json.dumps(event))
        else:
            who = f"{_now()}  {event['device'] + '/' + event['camera']:<24} {event['type'].upper():<6}"
            if event.get("kind") == "tamper":
                self._print(f"{who} TAMPER id={event['id'][:8]} seq={event['seq']} {event['reason']}")
            elif event["type"] == "clip":
                self._print(f"{who} id={event['id'][:8]} seq={event['seq']} {event['duration_s']:.1f} s "
                            f"({event['pre_roll_s']:.1f} s before) {event['codec']} {event['bytes']}B {event['path']}")
            else:
                score = event.get("score")
                score_text = "-" if score is None else f"{score:.1f}"
                self._print(
                    f"{who} id={event['id'][:8]} seq={event['seq']} score={score_text} "
                    f"peak={event['peak_score']:.1f} region={event.get('region')} "
                    f"snapshot={event['snapshot']['bytes']}B"
                )
        if warning:
            self._print(f"{_now()}  {event['device']:<24} {warning}")
        if self.on_event is not None:
            self.on_event(event)

    def _handle_snapshot(self, device: str, camera: str, message: mqtt.MQTTMessage) -> None:
        if self.snapshot_dir is None or not message.payload:
            return
        props = dict(getattr(message.properties, "UserProperty", None) or [])
        event_id = _SAFE.sub("_", props.get("event_id", f"retained-{int(time.time())}"))
        folder = self.snapshot_dir / _SAFE.sub("_", device) / _SAFE.sub("_", camera)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{event_id}.jpg"
        path.write_bytes(message.payload)
        if path not in self.result.snapshots:
            self.result.snapshots.append(path)
        if not self.as_json:
            self._print(f"{_now()}  {device + '/' + camera:<24} snapshot saved {path} ({len(message.payload)} B)")

    def connect(self) -> None:
        """Connect and subscribe; :class:`UserError` if the broker cannot be reached or refuses."""
        connect_or_fail(self._client, self.broker)

    def request_stop(self) -> None:
        """End :meth:`run` within its 0.1 s poll, as Ctrl-C does; safe to call from a signal handler."""
        self._stop_requested = True

    def run(self, *, duration: float | None = None, until: Callable[[], bool] | None = None) -> ListenResult:
        """Process messages until ``duration`` passes or ``until()`` is true (or Ctrl-C, or
        :meth:`request_stop`)."""
        deadline = None if duration is None else time.monotonic() + duration
        try:
            while not self._stop_requested and (deadline is None or time.monotonic() < deadline):
                rc = self._client.loop(timeout=0.1)
                if rc != mqtt.MQTT_ERR_SUCCESS:
                    self._print(f"{_now()}  connection lost ({mqtt.error_string(rc)}); reconnecting")
                    time.sleep(1)
                    try:
                        self._client.reconnect()
                    except OSError:
                        pass
                if until is not None and until():
                    break
        except KeyboardInterrupt:
            pass
        return self.result

    def close(self) -> None:
        self._client.disconnect()

    def summary(self) -> str:
        result = self.result
        kinds: dict[str, int] = {}
        for event in result.events:
            kinds[event["type"]] = kinds.get(event["type"], 0) + 1
        counts = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "none"
        return (
            f"{len(result.events)} event message(s) ({counts}); {len(result.snapshots)} snapshot(s) saved; "
            f"{result.seq.gaps} missing, {result.seq.duplicates} duplicate(s)"
            + (f", numbers started again {result.seq.restarts} time(s)" if result.seq.restarts else "")
        )


def _now() -> str:
    return time.strftime("%H:%M:%S")
