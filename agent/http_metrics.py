"""An optional local HTTP endpoint: ``/metrics`` (Prometheus text format) and ``/healthz``.

Off by default and bound to 127.0.0.1 unless ``http.host`` says otherwise: it has no
authentication. ``/healthz`` answers 200 ``ok`` once the agent is ready and nothing is hung (the
same verdict as the systemd watchdog), 503 with the reasons otherwise. Metrics are read from the
agent's counters at scrape time; process CPU and memory come from prometheus-client's own
process collector.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from agent import __version__
from agent.errors import UserError

if TYPE_CHECKING:
    from agent.daemon import Agent

log = logging.getLogger(__name__)


class AgentCollector(Collector):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | InfoMetricFamily]:
        agent = self.agent
        yield InfoMetricFamily("edge_agent", "Agent version and device id",
                               value={"version": __version__, "device": agent.config.device_id})
        healthy = agent.service.ready and not agent.service.problems
        yield GaugeMetricFamily("edge_agent_healthy", "1 when ready and nothing is hung (as /healthz)",
                                value=int(healthy))
        cameras = {
            "online": GaugeMetricFamily("edge_agent_camera_online", "1 while the source is open", labels=["camera"]),
            "frames": CounterMetricFamily("edge_agent_frames", "Frames through the model", labels=["camera"]),
            "dropped": CounterMetricFamily("edge_agent_dropped_frames", "Stale frames skipped", labels=["camera"]),
            "reconnects": CounterMetricFamily("edge_agent_reconnects", "Source reopens", labels=["camera"]),
            "picture_changes": CounterMetricFamily(
                "edge_agent_picture_changes", "Whole-picture changes the model started again on (lights, night mode)",
                labels=["camera"]),
            "lightings": GaugeMetricFamily("edge_agent_lightings", "Lightings the camera keeps statistics for",
                                           labels=["camera"]),
            "weather": GaugeMetricFamily(
                "edge_agent_weather", "1 while the whole picture moves (rain, snow): cells scored against their recent past",
                labels=["camera"]),
            "events": CounterMetricFamily("edge_agent_events", "Events started", labels=["camera"]),
            "score": GaugeMetricFamily("edge_agent_score", "Smoothed anomaly score (z)", labels=["camera"]),
        }
        for name, runtime in agent.cameras.items():
            pipeline = runtime.pipeline
            cameras["online"].add_metric([name], int(runtime.online))
            cameras["frames"].add_metric([name], pipeline.frames_processed)
            cameras["dropped"].add_metric([name], runtime.slot.dropped)
            cameras["reconnects"].add_metric([name], runtime.capture.reconnects)
            cameras["picture_changes"].add_metric([name], pipeline.stream.picture_changes)
            cameras["lightings"].add_metric([name], pipeline.statistics.metrics()["lightings"])
            cameras["weather"].add_metric([name], int(pipeline.weather.active))
            cameras["events"].add_metric([name], pipeline.reporter.events_started)
            if pipeline.last_score is not None:
                cameras["score"].add_metric([name], pipeline.last_score)
        yield from cameras.values()
        publisher = agent.publisher
        stats = publisher.stats
        yield GaugeMetricFamily("edge_agent_mqtt_connected", "1 while connected to the broker",
                                value=int(publisher.connected))
        yield GaugeMetricFamily("edge_agent_mqtt_pending", "Messages queued or awaiting PUBACK",
                                value=publisher.pending)
        for name, value, help_text in (
            ("published", stats.published, "Messages handed to the broker"),
            ("acked", stats.acked, "QoS 1 messages acknowledged"),
            ("dropped_qos0", stats.dropped_qos0, "QoS 0 messages (metrics) dropped while disconnected"),
            ("connects", stats.connects, "Successful broker connections"),
        ):
            yield CounterMetricFamily(f"edge_agent_mqtt_{name}", help_text, value=value)
        outbox = publisher.outbox
        depth = outbox.depth()
        rows = GaugeMetricFamily("edge_agent_outbox_rows", "Unacknowledged messages on disk", labels=["kind"])
        size = GaugeMetricFamily("edge_agent_outbox_bytes", "Payload bytes on disk", labels=["kind"])
        for key, value in depth.items():
            if key.endswith("_bytes"):
                size.add_metric([key.removesuffix("_bytes")], value)
            else:
                rows.add_metric([key.removesuffix("s")], value)
        yield rows
        yield size
        yield GaugeMetricFamily("edge_agent_outbox_high_water", "1 when unsent events pass outbox.event_high_water",
                                value=int(depth.get("events", 0) >= outbox.event_high_water))
        yield CounterMetricFamily("edge_agent_outbox_unpersisted", "Messages kept in memory only (disk error)",
                                  value=outbox.stats.unpersisted)
        yield CounterMetricFamily("edge_agent_outbox_dropped_snapshots", "Unsent snapshots dropped over quota",
                                  value=outbox.stats.dropped_snapshots)


class MetricsServer:
    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.registry = CollectorRegistry()
        self.registry.register(AgentCollector(agent))
        self.registry.register(ProcessCollector(registry=None))
        handler = self._handler()
        http = agent.config.http
        try:
            self.server = ThreadingHTTPServer((http.host, http.port), handler)
        except OSError as error:
            raise UserError(f"http: cannot listen on {http.host}:{http.port}: {error.strerror}") from None
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name="http-metrics", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics, health on /healthz", self.agent.config.http.host, self.port)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        registry, agent = self.registry, self.agent

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # the http.server API's name
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
                elif path == "/healthz":
                    service = agent.service
                    if not service.ready:
                        self._reply(503, b"starting\n")
                    elif service.problems:
                        self._reply(503, ("\n".join(service.problems) + "\n").encode())
                    else:
                        self._reply(200, b"ok\n")
                else:
                    self._reply(404, b"not found: try /metrics or /healthz\n")

            def _reply(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # the API's name
                log.debug("http %s: %s", self.address_string(), format % args)

        return Handler
