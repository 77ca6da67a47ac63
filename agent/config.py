"""Configuration schema, loading and validation.

One pydantic model with ``extra="forbid"`` everywhere, so a typo is an error and not a silently
ignored key. ``load_config`` turns every failure (missing file, broken YAML, schema errors) into a
:class:`ConfigError` whose lines name the key path, e.g. ``cameras[0].fps: must be > 0``.

A rule between keys of one section is a field validator of the later key, reading the earlier one
from ``info.data``: it is reported under that key's path, and it runs even when another key of the
section is wrong (a model validator would not run then). The rules across sections and cameras
(``health.stall_s``, unique camera names) are a model validator of :class:`AgentConfig`, judged
again by ``parse_config`` on the keys that are valid on their own when another key anywhere is
wrong, so that every problem is reported at once, each under its key path. (With
``validate_assignment``, assigning the *earlier* key of such a rule is not checked against the
later one; the agent builds configs by validating data and never assigns those keys.)
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from agent.errors import ConfigError

NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
PositiveFloat = Annotated[float, Field(gt=0)]

USERNAME_ENV = "EDGE_AGENT_MQTT_USERNAME"
PASSWORD_ENV = "EDGE_AGENT_MQTT_PASSWORD"
#: Environment variables that override secrets, so they need not sit in the YAML file.
SECRET_ENV = {USERNAME_ENV: ("mqtt", "username"), PASSWORD_ENV: ("mqtt", "password")}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TlsConfig(Strict):
    """TLS to the broker (1.2 or newer). Present means on; the server is always verified unless
    ``insecure_skip_verify`` says otherwise (logged as an error at every start)."""

    #: CA bundle that signed the broker's certificate; ``null`` uses the system's CAs.
    ca_file: Path | None = None
    #: Client certificate and its key, for brokers with ``require_certificate true``.
    cert_file: Path | None = None
    key_file: Path | None = Field(None, validate_default=True)
    insecure_skip_verify: bool = False

    @field_validator("key_file")
    @classmethod
    def _cert_and_key_together(cls, key_file: Path | None, info: ValidationInfo) -> Path | None:
        if "cert_file" in info.data and (info.data["cert_file"] is None) != (key_file is None):
            raise ValueError("cert_file and key_file go together: set both or neither")
        return key_file


class MqttConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    base_topic: str = Field("edge", pattern=r"^[^#+]+$")
    client_id: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    keepalive_s: int = Field(30, ge=5, le=3600)
    connect_timeout_s: PositiveFloat = 5.0
    reconnect_max_s: PositiveFloat = 30.0
    metrics_interval_s: PositiveFloat = 10.0
    #: QoS 1 messages sent and not yet acknowledged, at most; bounds the replay after an outage.
    max_inflight: int = Field(20, ge=1, le=1000)
    tls: TlsConfig | None = None


class OutboxConfig(Strict):
    """The on-disk queue of events and snapshots not yet acknowledged by the broker."""

    #: Unsent snapshots beyond this many bytes are dropped, oldest first (events never are).
    snapshot_quota_mb: PositiveFloat = 50.0
    #: Above this many unsent events, ``state`` and the metrics raise an alarm.
    event_high_water: int = Field(10_000, ge=1)


class RemoteConfig(Strict):
    """Configuration and commands over MQTT ({base}/{device}/config/set, .../command)."""

    enabled: bool = True
    #: Larger requests are rejected unread.
    max_payload_bytes: int = Field(65536, ge=1024)
    #: A changed or added camera must deliver a frame within this time, or the change is rolled back.
    health_timeout_s: PositiveFloat = 10.0
    #: Accept only requests signed by the matching Ed25519 private key (PEM public key file).
    public_key_file: Path | None = None


class ModelConfig(Strict):
    #: ``null`` means the model shipped with the agent.
    path: Path | None = None
    #: If set, the model file's SHA-256 (hex) must match, or the model is refused.
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    num_threads: int = Field(1, ge=1, le=16)
    #: Where inference runs (see :mod:`agent.delegates`): ``auto`` tries the Edge TPU, then GPU/NPU
    #: delegates found on the box, then the CPU; or exactly ``cpu``, ``edgetpu``, ``gpu``,
    #: ``external`` (``delegate_library`` names it). An accelerator that fails falls back to the CPU.
    delegate: Literal["auto", "cpu", "edgetpu", "gpu", "external"] = "auto"
    #: The delegate's shared library: required for ``external``; overrides the usual name otherwise.
    delegate_library: str | None = Field(None, validate_default=True)
    #: Options handed to the delegate library (string keys and values, e.g. ``device: usb``).
    delegate_options: dict[str, str] = Field(default_factory=dict)
    #: How often a camera that fell back to the CPU tries its accelerator again.
    reprobe_interval_s: PositiveFloat = 60.0

    @field_validator("delegate_library")
    @classmethod
    def _external_needs_library(cls, library: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("delegate") == "external" and not library:
            raise ValueError("is required for delegate 'external' (the delegate's .so)")
        return library


class SyntheticAnomaly(Strict):
    kind: Literal["fast", "large", "off_path"] = "fast"
    start_s: float = Field(20.0, ge=0)
    duration_s: PositiveFloat = 4.0


class SyntheticConfig(Strict):
    width: int = Field(360, ge=32, le=3840)
    height: int = Field(240, ge=32, le=2160)
    people: int = Field(6, ge=0, le=50)
    seed: int = 0
    #: ``null`` for a scene with no anomaly at all.
    anomaly: SyntheticAnomaly | None = SyntheticAnomaly()


class DetectorConfig(Strict):
    """Turns the per-frame anomaly score (a z-score) into events."""

    on_threshold: float = 6.0
    off_threshold: float = Field(4.0, validate_default=True)
    #: Weight of the newest frame in the causal exponential moving average (1 = no smoothing).
    smoothing: float = Field(0.5, gt=0, le=1)
    min_duration_s: float = Field(0.3, ge=0)
    cooldown_s: float = Field(5.0, ge=0)
    update_interval_s: PositiveFloat = 2.0
    max_event_s: PositiveFloat = 600.0

    @field_validator("off_threshold")
    @classmethod
    def _off_below_on(cls, off: float, info: ValidationInfo) -> float:
        on = info.data.get("on_threshold")
        if on is not None and off > on:
            raise ValueError(f"must not exceed on_threshold ({_number(on)}), got {_number(off)}")
        return off


class CalibrationConfig(Strict):
    """Per-cell statistics of the anomaly map that turn raw model error into z-scores.

    ``auto``: learn them on this camera during its first ``frames`` frames (the scene must be
    normal then) and keep them in the state directory; ``model``: use the statistics of the
    model's training footage from its sidecar (right only for that scene).
    """

    mode: Literal["auto", "model"] = "auto"
    frames: int = Field(150, ge=10)
    #: Rows and columns of cells the frame is scored in; must divide the model's motion map (24x36).
    grid: tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]] = (4, 6)
    #: Floor on each cell's spread, as a multiple of the quiet cells' spread (25th percentile).
    std_floor: float = Field(2.0, gt=0)
    #: Lightings of the scene (day, night, lamps on) the camera keeps statistics for, learning a
    #: new one when its picture looks unlike every known one (:mod:`agent.lighting`); 1 keeps
    #: one set whatever the lighting (of a file written with more, the one used last).
    #: ``mode: model`` keeps the model's only.
    lightings: int = Field(8, ge=1, le=32)
    #: A picture is another lighting when its brightness or contrast differs by more than this
    #: fraction (or its colour clearly: a colour picture and an infrared grey one).
    lighting_tolerance: float = Field(0.2, gt=0, le=4)
    #: A new lighting that came gradually (not at once) is learned once it has lasted this long
    #: (frame time), at the first frame with no event open; until then it is scored with the
    #: lighting the camera had. Nothing is learned while an event is open.
    lighting_settle_s: float = Field(10.0, ge=0)


class TamperConfig(Strict):
    """Covered, defocused or blinded lens, or a camera turned away: ``tamper`` events."""

    enabled: bool = True
    #: Seconds of the first frames that make the scene's reference.
    learn_s: PositiveFloat = 10.0
    #: The reference follows a healthy scene with this time constant (dusk, dawn, weather).
    adapt_s: PositiveFloat = 600.0
    #: A tampered (or healed) look must last this long to start (or end) an event.
    min_duration_s: float = Field(3.0, ge=0)
    #: Covered: brightness and edge strength both below this fraction of the reference's.
    covered_ratio: float = Field(0.35, gt=0, lt=1)
    #: Defocused (blur, spray, fog): edge strength below this fraction of the reference's.
    defocus_ratio: float = Field(0.45, gt=0, lt=1)
    #: Moved: correlation with the reference image at or below this.
    moved_correlation: float = Field(0.4, ge=-1, lt=1)
    #: Blinded: mean brightness at or above this (0-255) and 1.5x the reference's, or this
    #: fraction of pixels saturated.
    blinded_brightness: float = Field(200.0, gt=0, le=255)
    blinded_saturated: float = Field(0.5, gt=0, le=1)


Point = tuple[Annotated[int, Field(ge=0)], Annotated[int, Field(ge=0)]]


class EnhanceConfig(Strict):
    """Enhancement of published snapshots (see :mod:`agent.enhance`)."""

    #: ``auto`` enhances only frames that are dark, flat or noisy; ``always``; ``off``.
    mode: Literal["auto", "always", "off"] = "auto"
    #: Frames averaged by the temporal denoiser (1 turns it off).
    denoise_frames: int = Field(4, ge=1, le=16)
    gamma: bool = True
    clahe: bool = True
    clahe_clip: float = Field(2.0, gt=0)
    #: Unsharp-mask amount (0 turns it off).
    sharpen: float = Field(0.0, ge=0, le=3)
    #: ``auto`` thresholds: mean grey below this is dark, its spread below this flat, noise above this noisy.
    dark_below: float = Field(80.0, ge=0, le=255)
    flat_below: float = Field(25.0, ge=0)
    noisy_above: float = Field(6.0, ge=0)


class SnapshotConfig(Strict):
    jpeg_quality: int = Field(85, ge=10, le=100)
    max_width: int = Field(1280, ge=64)
    #: A JPEG larger than this is re-encoded at lower quality, then smaller, until it fits.
    max_bytes: int | None = Field(None, ge=2000)
    #: Also publish an unannotated copy on ``{camera}/snapshot/clean``.
    clean_copy: bool = False
    #: Also publish the event's region, with a margin, at full resolution on ``{camera}/snapshot/crop``.
    crop: bool = False
    #: Polygons (frame pixel coordinates) blacked out in every published image, before encoding.
    privacy_masks: list[Annotated[list[Point], Field(min_length=3)]] = []
    enhance: EnhanceConfig = EnhanceConfig()


class ClipsConfig(Strict):
    """Event clips: an MP4 per event with pre- and post-roll (see :mod:`agent.clips`)."""

    enabled: bool = False
    #: Seconds before the event's start, kept in memory, that open the clip.
    pre_roll_s: float = Field(5.0, ge=0, le=60)
    #: Seconds recorded after the event's end.
    post_roll_s: float = Field(5.0, ge=0, le=300)
    #: A clip (pre-roll included) ends here even if its event goes on; the rest is not recorded.
    max_length_s: PositiveFloat = Field(60.0, validate_default=True)
    fps: float = Field(10.0, gt=0, le=60)
    #: Frame width of clips (height follows); smaller frames are not enlarged.
    width: int = Field(640, ge=64, le=3840)
    #: Where clips are written; ``null``: ``state_dir/clips``.
    dir: Path | None = None
    #: This camera's clips beyond this many bytes are deleted, oldest first.
    max_bytes: int = Field(1_000_000_000, ge=1_000_000)
    #: Clips older than this many hours are deleted too (``null``: only ``max_bytes`` counts).
    max_age_h: PositiveFloat | None = None
    #: Memory for the pre-roll frames (JPEG-compressed); the oldest go first beyond it.
    buffer_mb: PositiveFloat = 16.0
    #: ``path``: the announcement names the file on the box; ``chunked``: the file itself is
    #: published too, in ``chunk_bytes`` pieces on ``{camera}/clip/{event_id}/{n}``.
    payload: Literal["path", "chunked"] = "path"
    chunk_bytes: int = Field(262_144, ge=1024, le=16 * 2**20)

    @field_validator("max_length_s")
    @classmethod
    def _longer_than_pre_roll(cls, max_length_s: float, info: ValidationInfo) -> float:
        pre_roll_s = info.data.get("pre_roll_s")
        if pre_roll_s is not None and max_length_s <= pre_roll_s:
            raise ValueError(f"must exceed pre_roll_s ({_number(pre_roll_s)}), got {_number(max_length_s)}")
        return max_length_s


class GatingConfig(Strict):
    """Fewer model runs on a static scene, to save power (see :mod:`agent.stream`)."""

    enabled: bool = False
    #: The scene counts as static while no point of the frame at the motion map's size (24x36) differs by more
    #: than this many grey levels from the last frame the model saw (sensor noise is about 1).
    motion_threshold: float = Field(4.0, gt=0, le=255)
    #: On a static scene, the model runs on one frame in this many.
    stride: int = Field(5, ge=2, le=100)


class WeatherConfig(Strict):
    """Rain and snow: the whole picture moves (see :mod:`agent.weather`)."""

    enabled: bool = True
    #: Weather starts at the second frame within a second with at least this share of its cells
    #: at or above the detector's ``on_threshold``, spread over the picture (rain: 16-24 of 24
    #: cells; people at most 5).
    share: float = Field(1 / 3, gt=0, le=1)
    #: In weather each cell is scored against its own values over this many seconds; weather
    #: ends when no frame has reached ``share`` for as long.
    window_s: float = Field(6.0, ge=1, le=60)


class CameraConfig(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    #: A video file, a folder of images, a V4L2 device (``0`` or ``/dev/video0``),
    #: an ``rtsp://`` / ``http(s)://`` URL, or ``synthetic``.
    source: str
    enabled: bool = True
    #: Rewind a video file or folder at its end instead of stopping.
    loop: bool = False
    #: Pace files and the synthetic scene at their frame rate, like a live camera.
    realtime: bool = True
    #: Frame rate of folders and the synthetic scene, and the pace of a file (default: its own).
    fps: PositiveFloat | None = None
    open_timeout_s: PositiveFloat = 10.0
    read_timeout_s: PositiveFloat = 10.0
    #: FFmpeg's decoding threads for a video file or stream (0: its default, one per core).
    decode_threads: int = Field(1, ge=0, le=16)
    #: A live source that delivers no frame for this long is reopened, even if its read hangs.
    stall_timeout_s: PositiveFloat = 15.0
    synthetic: SyntheticConfig | None = None
    detector: DetectorConfig = DetectorConfig()
    calibration: CalibrationConfig = CalibrationConfig()
    tamper: TamperConfig = TamperConfig()
    gating: GatingConfig = GatingConfig()
    weather: WeatherConfig = WeatherConfig()
    snapshot: SnapshotConfig = SnapshotConfig()
    clips: ClipsConfig = ClipsConfig()

    @field_validator("source")
    @classmethod
    def _source_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()


class HealthConfig(Strict):
    #: An open camera with no frame processed, or a publisher loop that has not turned, for this
    #: long counts as hung: systemd watchdog pings stop and ``/healthz`` fails.
    stall_s: PositiveFloat = 30.0


class HttpConfig(Strict):
    """The local ``/metrics`` (Prometheus text) and ``/healthz`` endpoint; off by default."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(9860, ge=1, le=65535)


class HomeAssistantConfig(Strict):
    """Home Assistant MQTT discovery: retained entity configs under ``prefix``."""

    enabled: bool = False
    prefix: str = Field("homeassistant", pattern=r"^[^#+]+$")


class AgentConfig(Strict):
    device_id: str = Field("edge-1", pattern=NAME_PATTERN)
    #: Fleet groups this device takes config patches from ({base}/groups/{group}/config/set).
    groups: list[Annotated[str, Field(pattern=NAME_PATTERN)]] = []
    state_dir: Path = Path("state")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: ``json``: one JSON object per log line (for log shippers); ``text`` otherwise.
    log_format: Literal["text", "json"] = "text"
    mqtt: MqttConfig = MqttConfig()
    outbox: OutboxConfig = OutboxConfig()
    remote: RemoteConfig = RemoteConfig()
    health: HealthConfig = HealthConfig()
    http: HttpConfig = HttpConfig()
    homeassistant: HomeAssistantConfig = HomeAssistantConfig()
    model: ModelConfig = ModelConfig()
    cameras: list[CameraConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _rules_across_sections(self) -> AgentConfig:
        found = [
            *watchdog_problems(self.health.stall_s, [camera.stall_timeout_s for camera in self.cameras]),
            *duplicate_name_problems([camera.name for camera in self.cameras]),
        ]
        if found:
            raise ValidationError.from_exception_data(type(self).__name__, [
                InitErrorDetails(type="value_error", loc=loc, input=self, ctx={"error": message})
                for loc, message in found
            ])
        return self


#: A problem found by a rule across sections: the key path of the key that breaks it, and what is wrong.
Problem = tuple[tuple[int | str, ...], str]


def watchdog_problems(stall_s: float | None, stall_timeouts: list[float]) -> list[Problem]:
    """A stalled live stream is first the capture's to reopen; the watchdog restarting the whole
    process is the last resort, so ``health.stall_s`` must wait longer than every camera's
    ``stall_timeout_s``. ``None``: not known (the key is wrong, and reported as such)."""
    slowest = max(stall_timeouts, default=0.0)
    if stall_s is None or stall_s > slowest:
        return []
    return [(("health", "stall_s"),
             f"must exceed every camera's stall_timeout_s (largest: {_number(slowest)}), got {_number(stall_s)}")]


def duplicate_name_problems(names: list[str | None]) -> list[Problem]:
    """Each camera's name is its own: it names the camera's topics and state. ``None``: not known."""
    first: dict[str, int] = {}
    found: list[Problem] = []
    for index, name in enumerate(names):
        if name is not None and name in first:
            found.append((("cameras", index, "name"), f"{name!r} is the name of cameras[{first[name]}] too"))
        elif name is not None:
            first[name] = index
    return found


def _valid_value(model: type[BaseModel], section: Any, key: str) -> Any:
    """``section[key]`` as ``model`` validates it, its default if absent; ``None`` if it is not
    valid, or required and absent."""
    if not isinstance(section, dict):
        return None
    field = model.model_fields[key]
    if key not in section:
        return None if field.is_required() else field.get_default(call_default_factory=True)
    try:
        return TypeAdapter(Annotated[(field.annotation, *field.metadata)]).validate_python(section[key])
    except ValidationError:
        return None


def problems_across_sections(data: dict[str, Any]) -> list[str]:
    """The rules across sections, judged on the raw ``data``'s keys that are valid on their own:
    :class:`AgentConfig`'s own check does not run when any other key is wrong."""
    cameras = data.get("cameras")
    cameras = cameras if isinstance(cameras, list) else []
    timeouts = [_valid_value(CameraConfig, camera, "stall_timeout_s") for camera in cameras]
    found = [
        *watchdog_problems(_valid_value(HealthConfig, data.get("health", {}), "stall_s"),
                           [timeout for timeout in timeouts if timeout is not None]),
        *duplicate_name_problems([_valid_value(CameraConfig, camera, "name") for camera in cameras]),
    ]
    return [f"{format_loc(loc)}: {message}" for loc, message in found]


def format_loc(loc: tuple[int | str, ...]) -> str:
    """``('cameras', 0, 'fps')`` -> ``cameras[0].fps``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


_FRIENDLY = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "missing": "is required",
}


def _allowed_keys(loc: tuple[int | str, ...]) -> list[str]:
    """The keys the schema allows at the mapping that holds ``loc``'s last key."""
    model: Any = AgentConfig
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return []
        annotation = field.annotation
        for candidate in getattr(annotation, "__args__", (annotation,)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                model = candidate
                break
        else:
            return []
    return list(getattr(model, "model_fields", {}))


def _number(value: Any) -> Any:
    """``0.0`` -> ``0`` so that messages read like the config a person wrote."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def format_errors(error: ValidationError) -> list[str]:
    lines = []
    for item in error.errors():
        loc = tuple(item["loc"])
        kind = item["type"]
        if kind == "extra_forbidden":
            allowed = _allowed_keys(loc)
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            message = f"unknown key{hint} (allowed: {', '.join(allowed)})" if allowed else "unknown key"
        elif kind in _FRIENDLY:
            message = _FRIENDLY[kind].format(**{k: _number(v) for k, v in item.get("ctx", {}).items()})
        else:
            message = item["msg"].removeprefix("Value error, ")
            if kind != "value_error" and isinstance(item.get("input"), str | int | float | bool):
                message += f" (got {item['input']!r})"
        lines.append(f"{format_loc(loc)}: {message}")
    return lines


def _apply_env(data: dict[str, Any], environ: os._Environ[str] | dict[str, str]) -> None:
    for variable, (section, key) in SECRET_ENV.items():
        if variable in environ:
            section_data = data.setdefault(section, {})
            if isinstance(section_data, dict):
                section_data[key] = environ[variable]


def parse_config(
    data: Any, *, where: str = "config", base_dir: Path | None = None,
    environ: dict[str, str] | None = None,
) -> AgentConfig:
    """Validate already-parsed data; relative paths are taken from ``base_dir``."""
    if not isinstance(data, dict):
        raise ConfigError(where, [f"(top level): expected a mapping of keys, got {type(data).__name__}"])
    _apply_env(data, os.environ if environ is None else environ)
    try:
        config = AgentConfig.model_validate(data)
    except ValidationError as error:
        found = format_errors(error)
        # Already there if the other keys were valid, when AgentConfig's own check ran.
        found += [line for line in problems_across_sections(data) if line not in found]
        raise ConfigError(where, found) from None
    if base_dir is not None:
        _resolve_paths(config, base_dir)
    _read_password_file(config, where)
    return config


def load_config(path: Path | str, *, environ: dict[str, str] | None = None) -> AgentConfig:
    path = Path(path)
    return parse_config(read_config_data(path), where=str(path), base_dir=path.resolve().parent, environ=environ)


def read_config_data(path: Path) -> Any:
    """The YAML file's data, unvalidated; raises :class:`ConfigError` if it cannot be read or parsed."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), ["file not found"]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(str(path), [f"cannot read: {error}"]) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as error:
        raise ConfigError(str(path), [yaml_problem(error)]) from None
    return {} if data is None else data


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping: PyYAML keeps the last one
    silently, so a second ``detector:`` under a camera would drop the first without a word."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    first: dict[Any, yaml.Mark] = {}
    merge: yaml.Mark | None = None
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":  # ``<<: *defaults``: its keys may be overridden
            if merge is not None:  # the later would win, the opposite of ``<<: [*a, *b]``
                raise yaml.constructor.ConstructorError(
                    None, None, f"a second '<<' in one mapping (first at {_place(merge)}): merge several "
                    "with one, '<<: [*first, *second]'", key_node.start_mark)
            merge = key_node.start_mark
            continue
        key = loader.construct_object(key_node, deep=deep)
        try:
            seen = first.setdefault(key, key_node.start_mark)
        except TypeError:  # an unhashable key: the base constructor says so
            continue
        if seen is not key_node.start_mark:
            raise yaml.constructor.ConstructorError(
                None, None, f"the key {key!r} is given twice in one mapping (first at {_place(seen)})",
                key_node.start_mark)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)

#: PyYAML's contexts of a construct left open, which it reports only where it gives up (often the
#: next key's line), in words that say what is wrong where the construct starts.
_UNFINISHED = {
    "while parsing a flow sequence": "a flow sequence ('[') started here is not closed",
    "while parsing a flow mapping": "a flow mapping ('{') started here is not closed",
    "while scanning a quoted scalar": "a quoted string started here is not closed",
    "while scanning a simple key": "a key started here has no ':' after it",
}
#: PyYAML's names of what it found, in words (``'?'`` is its token for the start of a key).
_FOUND = {
    "expected <block end>, but found '<block mapping start>'":
        "this key is indented differently from the keys above it (count the spaces before it)",
    "expected <block end>, but found '<block sequence start>'":
        "this '- ' item is indented differently from the items above it (count the spaces before it)",
    "mapping values are not allowed here":
        "a ':' where no key can start: is this line indented deeper than the key above it, or does a value "
        "hold ': ' (then quote the value)?",
    "but got ": "but found ",
    "but found '?'": "but found a key",
    "but found '<stream end>'": "but found the end of the file",
    "found unexpected end of stream": "found the end of the file",
}


def _place(mark: yaml.Mark) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def yaml_problem(error: yaml.YAMLError) -> str:
    """``line L, column C: invalid YAML: ...`` where the parser gave up; for a bracket, quote or
    key left unfinished, where it started, and then where the parser gave up."""
    problem = getattr(error, "problem", None) or str(error)
    for token, words in _FOUND.items():
        problem = problem.replace(token, words)
    mark = getattr(error, "problem_mark", None)
    if mark is None:
        return f"invalid YAML: {problem}"
    unfinished = _UNFINISHED.get(getattr(error, "context", None) or "")
    start = getattr(error, "context_mark", None)
    if unfinished and start is not None:
        return f"{_place(start)}: invalid YAML: {unfinished}: at {_place(mark)} {problem}"
    return f"{_place(mark)}: invalid YAML: {problem}"


def _resolve_paths(config: AgentConfig, base_dir: Path) -> None:
    if not config.state_dir.is_absolute():
        config.state_dir = base_dir / config.state_dir
    if config.model.path is not None and not config.model.path.is_absolute():
        config.model.path = base_dir / config.model.path
    if config.remote.public_key_file is not None and not config.remote.public_key_file.is_absolute():
        config.remote.public_key_file = base_dir / config.remote.public_key_file
    if config.mqtt.password_file is not None and not config.mqtt.password_file.is_absolute():
        config.mqtt.password_file = base_dir / config.mqtt.password_file
    tls = config.mqtt.tls
    if tls is not None:
        for key in ("ca_file", "cert_file", "key_file"):
            value = getattr(tls, key)
            if value is not None and not value.is_absolute():
                setattr(tls, key, base_dir / value)
    for camera in config.cameras:
        if camera.clips.dir is not None and not camera.clips.dir.is_absolute():
            camera.clips.dir = base_dir / camera.clips.dir
        if _looks_like_relative_path(camera.source) and (base_dir / camera.source).exists():
            camera.source = str(base_dir / camera.source)


def _looks_like_relative_path(source: str) -> bool:
    return not (
        source == "synthetic"
        or source.isdigit()
        or source.startswith("/")
        or re.match(r"^[a-z][a-z0-9+.-]*://", source, re.IGNORECASE)
    )


def _read_password_file(config: AgentConfig, where: str) -> None:
    file = config.mqtt.password_file
    if file is None or config.mqtt.password is not None:
        return
    try:
        config.mqtt.password = read_password_file(file)
    except ValueError as error:
        raise ConfigError(where, [f"mqtt.password_file: cannot read {file}: {error}"]) from None


def read_password_file(file: Path) -> SecretStr:
    """The password in ``file``; the whitespace around it (a final newline) is not part of it.
    ``ValueError`` saying why it cannot be read (the caller names the setting)."""
    try:
        return SecretStr(file.read_text(encoding="utf-8").strip())
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text") from None
    except OSError as error:
        raise ValueError(error.strerror or str(error)) from None
