"""``edge-agent``: the monitoring agent (``run``) and the commands around it: checking and reloading its
config, operators' remote config, listening for its alerts, forgetting a retired box, calibrating,
measuring and training models, the demo, the benchmark and the version."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from agent import __version__
from agent.broker_options import PasswordSafeParser, add_broker_options, broker_config
from agent.errors import ConfigError, UserError
from agent.malloc import tune_malloc

if TYPE_CHECKING:
    from agent.config import AgentConfig

#: syslog priorities, understood by journald when they start a line on stderr.
_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class JournalFormatter(logging.Formatter):
    """``<6>message``: journald adds its own timestamps and reads the priority prefix."""

    def format(self, record: logging.LogRecord) -> str:
        return f"<{_PRIORITY.get(record.levelno, 6)}>{super().format(record)}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (Unix seconds), level, logger, message, and exc if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": round(record.created, 3), "level": record.levelname, "logger": record.name,
                 "message": record.getMessage()}
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class JournalJsonFormatter(JsonFormatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"<{_PRIORITY.get(record.levelno, 6)}>{super().format(record)}"


def stderr_is_journal() -> bool:
    """True when stderr is the journald stream systemd set up: ``JOURNAL_STREAM`` names its
    device and inode, and a child whose stderr was redirected elsewhere must not add prefixes."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        stat = os.fstat(sys.stderr.fileno())
        return (stat.st_dev, stat.st_ino) == (int(device), int(inode))
    except (ValueError, OSError):
        return False


def setup_logging(level: str, log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    journal = stderr_is_journal()
    if log_format == "json":
        handler.setFormatter(JournalJsonFormatter() if journal else JsonFormatter())
    elif journal:
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


#: SIGHUPs that came while the agent was starting (the file may have been read before the edit);
#: a plain list, as a handler must take no lock.
_hups_while_starting: list[int] = []


def cmd_run(args: argparse.Namespace) -> int:
    # First of all: SIGHUP's default action kills, and loading the models can take seconds on a Pi.
    signal.signal(signal.SIGHUP, lambda signum, _frame: _hups_while_starting.append(signum))
    from agent.config import parse_config, read_config_data
    from agent.daemon import Agent
    from agent.reload import effective_config
    from agent.remote_config import ConfigStore
    from agent.state_lock import StateDirLock

    path = Path(args.config)
    data = read_config_data(path)
    file_config = parse_config(data, where=str(path), base_dir=path.resolve().parent)
    setup_logging(args.log_level or file_config.log_level, file_config.log_format)
    with StateDirLock(file_config.state_dir):  # before anything in it is read; released at exit
        store = ConfigStore(data, file_config.state_dir, path.resolve().parent, tuple(file_config.groups))
        agent = Agent(effective_config(store, file_config, path), store, config_file=path)
        signal.signal(signal.SIGHUP, lambda signum, _frame: agent.signalled(signum))  # then no HUP is missed
        if _hups_while_starting:
            agent.signalled(signal.SIGHUP)
        agent.run_forever()
    return 0


def checked_config(path: str) -> AgentConfig:
    """The config file ``path`` parsed, and checked against its model as the agent would at a
    start; raises ConfigError with every problem."""
    from agent.config import load_config
    from agent.inference import DEFAULT_MODEL, StreamingModel, read_sidecar

    config = load_config(path)
    model = config.model.path or DEFAULT_MODEL
    if not model.is_file():
        raise ConfigError(path, [f"model.path: file not found: {model}"])
    # The grid must divide the model's motion map, which only the model knows: the agent would
    # refuse the camera at start. The sidecar says its size; without one, the model is loaded.
    shape = read_sidecar(model).get("map") or {}
    try:
        rows, cols = int(shape["height"]), int(shape["width"])
    except (KeyError, TypeError, ValueError):
        rows, cols = StreamingModel(model).map_shape
    problems = [f"cameras[{i}].calibration.grid: {c.calibration.grid[0]}x{c.calibration.grid[1]} does not "
                f"divide the model's {rows}x{cols} motion map" for i, c in enumerate(config.cameras)
                if rows % c.calibration.grid[0] or cols % c.calibration.grid[1]]
    if problems:
        raise ConfigError(path, problems)
    return config


def cmd_check_config(args: argparse.Namespace) -> int:
    config = checked_config(args.config)
    cameras = ", ".join(f"{c.name} ({c.source})" for c in config.cameras)
    print(f"{args.config}: OK: device {config.device_id}, broker {config.mqtt.host}:{config.mqtt.port}, "
          f"cameras: {cameras}")
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    from agent.config import load_config
    from agent.reload import GOOD_OUTCOMES, reload_timeout, request_reload
    from agent.state_lock import is_agent, running_agent

    # The check loads the model's runtime (60 MB): in a child, so that what waits out the reload
    # beside the agent (in its cgroup under systemd, at its memory peak) stays small.
    # -P: not the working directory's modules (the state_dir, under the unit) before the agent's.
    check = subprocess.run([sys.executable, "-P", "-m", "agent", "check-config", "--", args.config],
                           capture_output=True, text=True, check=False)
    if check.returncode != 0:  # a file with errors never reaches the agent
        sys.stderr.write(check.stderr)
        if check.returncode != 2:  # not the file's problems: the check itself failed
            print(f"error: the config check failed (exit {check.returncode}); the agent was not signalled",
                  file=sys.stderr)
        return 2
    config = load_config(args.config)
    holder = running_agent(config.state_dir)
    if holder is None or (args.pid is not None and holder != args.pid):
        if args.pid is not None and not is_agent(args.pid):
            raise UserError(f"--pid {args.pid}: no edge-agent runs as that process"
                            + (f" (pid {holder} is the agent with state_dir {config.state_dir})" if holder else ""))
        if args.pid is not None:
            raise UserError(f"the agent {args.pid} does not keep its state in {config.state_dir}, the state_dir "
                            f"{args.config} names" + (f" (pid {holder} does)" if holder else "")
                            + ": state_dir takes a restart (systemctl restart edge-agent)")
        raise UserError(f"no agent is running with state_dir {config.state_dir} (the one {args.config} names)")
    timeout = args.timeout if args.timeout is not None else reload_timeout(config.state_dir, holder,
                                                                           config.remote.health_timeout_s)
    record = request_reload(config.state_dir, holder, timeout)
    print(f"{args.config}: reload {record.status} by the agent (pid {holder})"
          + "".join(f"\n  {problem}" for problem in record.problems),
          file=sys.stdout if record.status in GOOD_OUTCOMES else sys.stderr)
    return 0 if record.status in GOOD_OUTCOMES else 1


def cmd_listen(args: argparse.Namespace) -> int:
    from agent.listen import Listener

    setup_logging("WARNING")  # what TLS has to say: verification turned off, a late refusal
    listener = Listener(
        broker_config(args), base=args.base, device=args.device,
        snapshot_dir=Path(args.snapshots) if args.snapshots else None,
        out=sys.stdout, as_json=args.json,
    )
    events_wanted = args.count
    # SIGTERM (kill, systemd, a supervisor, timeout(1)) ends it as Ctrl-C does: summary, exit 0;
    # from before the connect, which can take seconds to fail or succeed.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: listener.request_stop())
    try:
        listener.connect()
        listener.run(
            duration=args.timeout,
            until=(lambda: len(listener.result.events) >= events_wanted) if events_wanted else None,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
    listener.close()
    if not args.json:
        print(listener.summary())
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    from agent.forget import forget

    setup_logging("WARNING")  # what TLS has to say
    return forget(broker_config(args), args.base, args.device, args.discovery_prefix, force=args.force,
                  dry_run=args.dry_run, timeout=args.timeout, out=sys.stdout)


def cmd_config(args: argparse.Namespace) -> int:
    import json

    from agent.operator import OperatorClient, diff, local_patch_form
    from agent.remote_config import DuplicateKey, unique_keys

    setup_logging("WARNING")  # what TLS has to say: verification turned off, a late refusal
    local = local_patch_form(Path(args.file)) if args.action == "diff" else None
    patch = None
    if args.action == "set":
        try:
            patch = json.loads(args.patch, object_pairs_hook=unique_keys)
        except DuplicateKey as error:  # json would keep the last one, and the agent refuses it anyway
            raise UserError(f"PATCH: the key {error.key!r} is given twice in one object") from None
        except json.JSONDecodeError as error:
            raise UserError(f"PATCH is not JSON: {error}") from None
        if not isinstance(patch, dict):
            raise UserError("PATCH must be a JSON object, e.g. '{\"log_level\": \"DEBUG\"}'")
    client = OperatorClient(broker_config(args), args.base, args.device, args.timeout)
    try:
        if args.action == "set":
            assert patch is not None
            answer = client.set(patch, args.expected_version, Path(args.sign_key) if args.sign_key else None)
            print(json.dumps(answer, indent=2))
            return 0 if answer.get("status") == "applied" else 1
        state = client.get()
        if args.action == "get":
            print(json.dumps(state, indent=2))
            return 0
        assert local is not None
        lines = diff(state["config"], local)
        print("\n".join(lines) if lines else f"no difference from {args.file} (device at version {state['version']})")
        return 1 if lines else 0  # as diff(1) does: scripts can test it
    finally:
        client.close()


def cmd_enhance(args: argparse.Namespace) -> int:
    import cv2

    from agent.enhance_eval import evaluate, figure, report

    cv2.setNumThreads(1)  # the figure is per core
    root = Path(args.eval)
    if not root.is_dir():
        raise UserError(f"--eval: {root} is not a folder")
    print(report(evaluate(root, args.per_sequence), args.json))
    if args.figure:
        figure(root, Path(args.figure))
        if not args.json:
            print(f"figure written to {args.figure}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import time

    import cv2

    from agent.evaluation.run import Options, default_normal, evaluate, format_report

    started = time.perf_counter()
    cv2.setNumThreads(1)  # the step time is one thread's
    data = Path(args.data)
    if not data.is_dir():
        raise UserError(f"--data: {data} is not a folder")
    if args.normal and args.no_normal:
        raise UserError("--normal and --no-normal contradict each other")
    normal = None if args.no_normal else Path(args.normal) if args.normal else default_normal(data)
    if normal is not None and not normal.exists():
        raise UserError(f"--normal: {normal} does not exist")
    if not args.no_plots:
        from agent.evaluation.plots import pyplot, write_plots

        pyplot()  # a missing matplotlib is said now, not after the run
    evaluation = evaluate(Options(
        data=data, model=Path(args.model) if args.model else Options.model, normal=normal, fps=args.fps,
        gating=args.gating, localisation=not args.no_localisation,
        progress=not args.json and sys.stderr.isatty(),
    ))
    report = evaluation.report
    if not args.no_plots:
        report["plots"] = [str(p) for p in write_plots(evaluation, Path(args.plots))]
    report["seconds_total"] = round(time.perf_counter() - started, 1)
    if args.json:
        print(json.dumps(report))
        return 0
    print(format_report(evaluation))
    if not args.no_plots:
        print(f"plots: {', '.join(report['plots'])}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from agent.calibrate import calibrate, format_result, write
    from agent.config import CameraConfig, ModelConfig, load_config
    from agent.daemon import calibration_path
    from agent.delegates import DelegatedModel

    setup_logging("WARNING")
    if args.duration is not None and args.duration <= 0:
        raise UserError("--duration must be > 0 seconds")
    if args.config:
        config = load_config(args.config)
        names = [c.name for c in config.cameras]
        if args.camera is None and len(names) != 1:
            raise UserError(f"--camera: which one of {', '.join(names)}?")
        camera = next((c for c in config.cameras if c.name == (args.camera or names[0])), None)
        if camera is None:
            raise UserError(f"--camera: no camera {args.camera!r} in {args.config} (it has {', '.join(names)})")
        if args.model:
            raise UserError("--model: the model is the config's (model.path) with --config")
        if camera.calibration.mode != "auto":
            print(f"note: camera {camera.name} has calibration.mode {camera.calibration.mode}: the agent "
                  "reads this file only with mode auto", file=sys.stderr)
        model_config = config.model
        stored_source = camera.source
        out = Path(args.out) if args.out else calibration_path(config.state_dir, camera.name)
        if args.source:
            camera = camera.model_copy(update={"source": args.source})
        if args.fps:
            camera = camera.model_copy(update={"fps": args.fps})
    else:
        if not args.source or not args.out:
            raise UserError("without --config, --source and --out are needed")
        if args.camera:
            raise UserError("--camera names a camera of --config")
        camera = CameraConfig(name="calibrate", source=args.source, fps=args.fps)
        model_config = ModelConfig(path=Path(args.model) if args.model else None, delegate="cpu")
        stored_source, out = args.source, Path(args.out)
    result = calibrate(
        camera, DelegatedModel(model_config), duration_s=args.duration, target_per_hour=args.false_alarms_per_hour,
        stored_source=stored_source, progress=not args.json and sys.stderr.isatty(),
    )
    kept = write(result, out, camera.calibration)
    print(json.dumps({"path": str(out), **result.record, "n_frames": result.stats.frames,
                      "lighting": asdict(result.lighting), "lightings_kept": len(kept)}) if args.json
          else format_result(result, out, camera.name, kept))
    if args.config and not args.out:
        _note_a_running_agent(config.state_dir, camera.name)
    return 0


def _note_a_running_agent(state_dir: Path, camera: str) -> None:
    """A running agent reads a camera's calibration file when the camera starts, and rewrites it
    from what it holds when it next learns a lighting: say so, or the file just written is lost."""
    from agent.state_lock import running_agent

    try:
        pid = running_agent(state_dir)
    except UserError:
        return  # an agent starting: it reads the file as the camera starts
    if pid is not None:
        print(f"note: an edge-agent (pid {pid}) runs on this state_dir; camera {camera} reads the file when it "
              f"starts: restart it (the restart_camera command, or systemctl restart edge-agent), or the agent "
              "keeps its own statistics and overwrites the file when it next learns a lighting", file=sys.stderr)


def cmd_train(args: argparse.Namespace) -> int:
    import importlib.util

    from models import train

    program, sys.argv[0] = sys.argv[0], "edge-agent train"  # what models.train's usage lines name
    try:
        train.parse_args(args.args)  # --help and usage errors come before the TensorFlow check
        if importlib.util.find_spec("tensorflow") is None:
            raise UserError("training needs TensorFlow, which is not installed here: pip install -e '.[train]' from "
                            "the checkout (tensorflow-cpu, about 1.6 GB). Only "
                            "training needs it: the agent, eval and calibrate run on the TFLite runtime alone")
        return int(train.main(args.args) or 0)
    finally:
        sys.argv[0] = program


def cmd_demo(args: argparse.Namespace) -> int:
    from agent.demo import run_demo

    return run_demo(duration=args.duration, out_dir=Path(args.out))


def cmd_bench(args: argparse.Namespace) -> int:
    import json

    from agent.bench import Options, format_report, run_bench

    setup_logging("WARNING")
    if args.cameras < 1 or args.frames < 1:
        raise UserError("--cameras and --frames must be at least 1")
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise UserError(f"--size must be WIDTHxHEIGHT, e.g. 1280x720, not {args.size!r}") from None
    report = run_bench(Options(
        source=args.source, cameras=args.cameras, frames=args.frames, fps=args.fps, width=width,
        height=height, delegate=args.delegate, threads=args.threads, progress=not args.no_progress,
        gating=args.gating, people=args.people,
    ))
    print(json.dumps(report) if args.json else format_report(report))
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    from agent.inference import load_runtime

    try:
        runtime = load_runtime()[1]
    except UserError as error:
        runtime = str(error)
    print(f"edge-agent {__version__} (python {sys.version.split()[0]}, runtime {runtime})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = PasswordSafeParser(prog="edge-agent", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the agent (the daemon)")
    run.add_argument("--config", "-c", default="config.yaml", help="config file (default: config.yaml)")
    run.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="override log_level")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a config file and print every problem")
    check.add_argument("config", help="config file")
    check.set_defaults(func=cmd_check_config)

    reload = sub.add_parser(
        "reload", help="check a config file, have the agent running on it apply it, and wait for the outcome",
        description="What systemctl reload runs. Exit 0 if the agent applied the file (or it changed nothing), "
        "1 if the agent turned it down or went back, 2 if the file has errors (the agent is not disturbed), "
        "no agent runs on its state_dir, or no outcome came within --timeout.")
    reload.add_argument("--config", "-c", default="config.yaml", help="config file (default: config.yaml)")
    reload.add_argument("--pid", type=int, help="the agent's PID, to check it is the one (systemd: $MAINPID)")
    reload.add_argument("--timeout", type=float,
                        help="seconds to wait for the agent's outcome (default: 2 x the running agent's "
                             "remote.health_timeout_s + 30; the file's value where the agent has not "
                             "recorded its own)")
    reload.set_defaults(func=cmd_reload)

    listen = sub.add_parser(
        "listen", help="subscribe to events and snapshots, report gaps and duplicates",
        description="Subscribe to the devices' events (and snapshots), print them as they come and, at the end "
                    "(Ctrl-C, SIGTERM, --count or --timeout), a summary: event messages by type, snapshots saved, gaps "
                    "and duplicates in the events' sequence numbers (not with --json). Exit 0; 2 if the broker cannot be "
                    "reached or refuses the connection.")
    add_broker_options(listen)
    listen.add_argument("--base", default="edge", help="base topic (default: edge)")
    listen.add_argument("--device", default="+", help="device id, or + for the whole fleet (default)")
    listen.add_argument("--snapshots", metavar="DIR", help="save snapshots as DIR/DEVICE/CAMERA/EVENT_ID.jpg")
    listen.add_argument("--count", type=int, default=0, help="exit after this many event messages")
    listen.add_argument("--timeout", type=float, help="exit after this many seconds")
    listen.add_argument("--json", action="store_true", help="print each event as one JSON line")
    listen.set_defaults(func=cmd_listen)

    config = sub.add_parser(
        "config", help="an operator's get/set/diff of a device's config over MQTT",
        description="get: print the device's config and version. set: send PATCH; exit 0 if applied, 1 if "
        "not. diff: compare the device's config with --file; exit 0 if they agree, 1 if they differ (like "
        "diff(1)). Exit 2 on an error (broker, device not answering, bad arguments).")
    config.add_argument("action", choices=["get", "set", "diff"])
    config.add_argument("device", help="the device id")
    config.add_argument("patch", nargs="?", help="set: a JSON merge patch; diff: ignored")
    config.add_argument("--file", default="config.yaml", help="diff: the local config file (default config.yaml)")
    config.add_argument("--expected-version", type=int, help="set: fail if the device is not at this version")
    config.add_argument("--sign-key", metavar="PEM", help="set: sign the request with this Ed25519 private key")
    add_broker_options(config)
    config.add_argument("--base", default="edge", help="base topic (default: edge)")
    config.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the device (default: 30)")
    config.set_defaults(func=cmd_config)

    forget = sub.add_parser(
        "forget", help="empty the retained topics a retired or renamed device left on the broker",
        description="Empties DEVICE's retained topics (status, config state, camera status, snapshots, anomaly) "
        "and its Home Assistant discovery configs, then asks the broker what is left. Refuses a device whose "
        "status says online, unless --force (--dry-run lists its topics all the same). Exit 0 if none is left, "
        "1 if some are, 2 on an error.")
    forget.add_argument("device", help="the device id it had")
    add_broker_options(forget)
    forget.add_argument("--base", default="edge", help="base topic it had (default: edge)")
    forget.add_argument("--discovery-prefix", default="homeassistant",
                        help="Home Assistant discovery prefix (default: homeassistant)")
    forget.add_argument("--dry-run", action="store_true", help="list what would be emptied; change nothing")
    forget.add_argument("--force", action="store_true", help="also when the device says it is online")
    forget.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the broker (default: 10)")
    forget.set_defaults(func=cmd_forget)

    enhance = sub.add_parser("enhance", help="measure snapshot enhancement on degraded real frames")
    enhance.add_argument("--eval", required=True, metavar="DIR", help="folder(s) of image sequences, searched recursively")
    enhance.add_argument("--per-sequence", type=int, default=8, help="frames taken from each folder (default 8)")
    enhance.add_argument("--json", action="store_true", help="print one JSON object")
    enhance.add_argument("--figure", metavar="PNG", help="also write degraded / enhanced / annotated side by side")
    enhance.set_defaults(func=cmd_enhance)

    evaluation = sub.add_parser("eval", help="measure the anomaly model on labelled clips, beside baselines")
    evaluation.add_argument("--data", required=True, metavar="DIR",
                            help="labelled set in the UCSD Ped2 layout: testing/frames/NN/*.jpg, testing/labels.json")
    evaluation.add_argument("--model", metavar="FILE", help="int8 model (default: the shipped one); its sidecar "
                            "gives the normalisation, its float twin is measured beside it")
    evaluation.add_argument("--normal", metavar="PATH", help="normal footage of the same scene for the baselines' "
                            "statistics and the localisation (default: DIR/training/frames when present); a "
                            "folder of clip folders, a folder of images or a video")
    evaluation.add_argument("--no-normal", action="store_true", help="no normal footage: no per-cell baseline, no localisation")
    evaluation.add_argument("--plots", default="eval-out", metavar="DIR", help="where the PNG plots go (default eval-out)")
    evaluation.add_argument("--no-plots", action="store_true", help="no plots (matplotlib not needed)")
    evaluation.add_argument("--no-localisation", action="store_true", help="skip the hottest-cell localisation figure")
    evaluation.add_argument("--gating", action="store_true", help="with static-scene gating (cameras[].gating)")
    evaluation.add_argument("--fps", type=float, default=10.0, help="frame rate of the clips (default 10)")
    evaluation.add_argument("--json", action="store_true", help="print one JSON object")
    evaluation.set_defaults(func=cmd_eval)

    calibrate = sub.add_parser(
        "calibrate", help="learn a camera's score statistics and a threshold from normal footage (no TensorFlow)")
    calibrate.add_argument("--source", help="normal footage: video file, image folder, device, rtsp/http URL or "
                           "synthetic (default: the camera's source in --config)")
    calibrate.add_argument("--duration", type=float, metavar="S",
                           help="seconds of footage (default: to the end of a file or folder; required when live)")
    calibrate.add_argument("--config", "-c", help="the agent's config: model, the camera's settings, and the file "
                           "goes where the agent reads it (state_dir/calibration/CAMERA.json)")
    calibrate.add_argument("--camera", help="the camera of --config (default: its only one)")
    calibrate.add_argument("--out", metavar="FILE", help="calibration file to write (default with --config: the "
                           "agent's; then the file is matched against the camera's configured source)")
    calibrate.add_argument("--model", metavar="FILE", help="without --config: the int8 model (default: the shipped one)")
    calibrate.add_argument("--fps", type=float, help="frame rate of a folder or the synthetic scene (default: the "
                           "camera's fps, else 10)")
    calibrate.add_argument("--false-alarms-per-hour", type=float, default=1.0, metavar="RATE",
                           help="the suggested threshold's target on normal footage (default 1)")
    calibrate.add_argument("--json", action="store_true", help="print what was written as one JSON object")
    calibrate.set_defaults(func=cmd_calibrate)

    train = sub.add_parser(
        "train", add_help=False, help="train a model on normal footage (python -m models.train; needs the train "
        "extra: TensorFlow); its options: edge-agent train --help")
    train.set_defaults(func=cmd_train)  # its arguments are models.train's: main() hands them over

    demo = sub.add_parser("demo", help="broker + agent on the synthetic scene + listener, then stop all")
    demo.add_argument("--duration", type=float, default=30.0, help="seconds to run (default: 30)")
    demo.add_argument("--out", default="demo-out", help="folder for snapshots and the agent log (default: demo-out)")
    demo.set_defaults(func=cmd_demo)

    bench = sub.add_parser("bench", help="measure the real pipeline on a file or the synthetic scene")
    bench.add_argument("--source", default="synthetic", help="video file, folder or synthetic (default)")
    bench.add_argument("--cameras", type=int, default=1, help="cameras on that source (default: 1)")
    bench.add_argument("--frames", type=int, default=300, help="frames per camera (default: 300)")
    bench.add_argument("--fps", type=float, default=0.0,
                       help="pace each camera like a live one at this rate (default: 0, unpaced)")
    bench.add_argument("--size", default="360x240", help="synthetic frame size WxH (default: 360x240)")
    bench.add_argument("--delegate", default="auto", choices=["auto", "cpu", "edgetpu", "gpu"])
    bench.add_argument("--threads", type=int, default=1, help="interpreter threads (default: 1)")
    bench.add_argument("--gating", action="store_true", help="static-scene gating on (cameras[].gating)")
    bench.add_argument("--people", type=int, default=6, help="people in the synthetic scene (0: still)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    bench.set_defaults(func=cmd_bench)

    version = sub.add_parser("version", help="print the version and the TFLite runtime in use")
    version.set_defaults(func=cmd_version)
    return parser


def main(argv: list[str] | None = None) -> int:
    tune_malloc()
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "train":
        args.args = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return int(args.func(args))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
