"""Train the streaming CNN+ConvGRU motion model on normal footage and export int8 TFLite.

    python -m models.train --data /work/shared/data/ucsd-ped2/training/frames
    (or: edge-agent train --data ...)

--data accepts a folder of clip sub-folders of images, a flat folder of images, or a video file.
Writes <out>/<name>_int8.tflite, <out>/<name>_float.tflite and the sidecar <out>/<name>_int8.json
(input format, state size, warm-up, per-cell calibration on this footage, training record). The
default <out> is trained/, not models/: the shipped model is replaced only by naming models/.

What the model learns (no labels: normal footage only). For each pair of frames the teacher,
OpenCV's Farneback optical flow, gives per pixel speed (px per frame at the model's input size)
times the grey-level change |frame - previous|: how fast things move where the picture changes,
averaged over 4 x 4 pixel blocks, times 10. The student (:mod:`models.arch`) learns to give its
square root from its cost volume, frame after frame: the root keeps slow walkers and fast
cyclists apart within one int8 range (the agent squares the map back before averaging it).
Normal footage moves slowly; to teach speeds it has not seen, training sequences also take
every 2nd to 12th frame (``--skips``): the same people, up to 12 x faster, as fast as a car
crossing the frame in a few seconds.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

NAME = "ped2_cnn_gru"
#: Where a run writes by default: not models/, whose ped2_cnn_gru files are the shipped model.
OUT = "trained/"
#: Teacher values (speed x change, block means) are scaled by this before the square root.
TARGET_SCALE = 10.0


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module's docstring as written, and each option's default after its help where it has one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.required or action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--data", required=True, help="folder of clip folders, flat image folder, or video file")
    p.add_argument("--out", default=OUT, help="output folder (models/ replaces the shipped model)")
    p.add_argument("--name", default=NAME, help="file name stem")
    p.add_argument("--epochs", type=int, default=40, help="epochs (one epoch = #windows / batch steps)")
    p.add_argument("--minutes", type=float, default=12.0, help="wall-time cap for the training loop")
    p.add_argument("--steps", type=int, default=None,
                   help="train exactly this many steps, whatever the time: the same model from the same seed on "
                        "any machine (by default as many as --epochs and --minutes allow, which depends on the "
                        "machine's speed and load)")
    p.add_argument("--seq-len", type=int, default=5, help="unrolled training sequence length T")
    p.add_argument("--batch", type=int, default=12, help="sequences per training step")
    p.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate at the top of its cosine schedule")
    p.add_argument("--seed", type=int, default=1234, help="seed of every random choice")
    p.add_argument("--height", type=int, default=96, help="model input height (px)")
    p.add_argument("--width", type=int, default=144, help="model input width (px)")
    p.add_argument("--gru-ch", type=int, default=12, help="ConvGRU channels at 1/4 resolution")
    p.add_argument("--skips", type=int, nargs="+", default=(1, 1, 2, 3, 4, 6, 9, 12),
                   help="frame strides of the training sequences (>1: faster motion than the footage has; "
                        "a stride listed twice is drawn twice as often)")
    p.add_argument("--calib-samples", type=int, default=600, help="representative samples for int8 calibration")
    p.add_argument("--init", default=None, help="start from a saved .keras step model (with --epochs 0: convert only)")
    p.add_argument("--save-keras", action="store_true", help="also save the trained Keras step model (<name>.keras)")
    p.add_argument("--grid", type=int, nargs=2, default=(4, 6), metavar=("ROWS", "COLS"),
                   help="cells of the calibration statistics in the sidecar (the agent's default grid)")
    return p.parse_args(argv)


def set_seeds(seed: int) -> None:
    import keras
    import tensorflow as tf
    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)
    keras.utils.set_random_seed(seed)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=5, check=False)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):  # no git, or it hung: the sidecar says None
        return None


def teacher(previous: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Farneback speed x |change| per pixel of two grey uint8 frames, averaged over blocks of the map."""
    import cv2

    from models.arch import MAP_DOWN
    flow = cv2.calcOpticalFlowFarneback(previous, current, None, 0.5, 3, 9, 3, 5, 1.1, 0)
    speed = np.sqrt(np.square(flow).sum(axis=-1))
    change = np.abs(current.astype(np.float32) - previous.astype(np.float32)) / 255
    h, w = current.shape
    return (speed * change).reshape(h // MAP_DOWN, MAP_DOWN, w // MAP_DOWN, MAP_DOWN).mean(axis=(1, 3))


def teacher_targets(clips: list[np.ndarray], skips: tuple[int, ...]) -> list[dict[int, np.ndarray]]:
    """Per clip and stride k: target[t] for the pair (frame t-k, frame t), in the model's output units."""
    from tqdm import tqdm
    out = []
    with tqdm(total=len(clips) * len(skips), desc="teacher (optical flow)", unit="clip-stride") as bar:
        for clip in clips:
            grey = np.rint(clip * 255).astype(np.uint8)
            per_skip = {}
            for k in skips:
                maps = [teacher(grey[t - k], grey[t]) for t in range(k, len(grey))]
                blank = np.zeros_like(maps[0]) if maps else np.zeros((1, 1), np.float32)
                per_skip[k] = np.sqrt(TARGET_SCALE * np.stack([blank] * k + maps)).astype(np.float32)
                bar.update(1)
            out.append(per_skip)
    return out


# --------------------------------------------------------------------------------------------
def train(args: argparse.Namespace, clips: list[np.ndarray], targets: list[dict[int, np.ndarray]]):
    import keras
    import tensorflow as tf
    from tqdm import tqdm

    from models.arch import build_step_model

    T, B = args.seq_len, args.batch
    if args.init:
        step_model = keras.models.load_model(args.init, compile=False, safe_mode=False)
    else:
        step_model = build_step_model(args.height, args.width, gru_ch=args.gru_ch)
    D = int(step_model.get_layer("h_new").output.shape[-1])

    windows = [(ci, k, s) for ci, c in enumerate(clips) for k in args.skips for s in range(len(c) - (T - 1) * k)]
    if not windows:
        raise ValueError(f"all clips shorter than --seq-len {T}")
    steps_per_epoch = max(1, len(windows) // B)
    max_steps = args.epochs * steps_per_epoch if args.steps is None else args.steps
    rng = np.random.default_rng(args.seed)

    def batch() -> tuple[np.ndarray, np.ndarray]:
        x = np.empty((B, T, *clips[0].shape[1:], 1), np.float32)
        y = np.empty((B, T, *targets[0][args.skips[0]].shape[1:], 1), np.float32)
        for b, i in enumerate(rng.integers(0, len(windows), B)):
            ci, k, s = windows[i]
            frames = [s + j * k for j in range(T)]
            x[b, ..., 0], y[b, ..., 0] = clips[ci][frames], targets[ci][k][frames]
            if rng.random() < 0.5:  # mirror: speeds are the same
                x[b], y[b] = x[b, :, :, ::-1], y[b, :, :, ::-1]
        return x, y

    opt = keras.optimizers.Adam(learning_rate=args.lr, clipnorm=1.0)
    weights = step_model.trainable_variables

    @tf.function(reduce_retracing=True)
    def train_step(x, y):
        with tf.GradientTape() as tape:
            h = tf.zeros((tf.shape(x)[0], D))
            losses = []
            for t in range(T):  # unrolled, shared weights; step 0 starts from a zero state
                out = step_model({"frame": x[:, t], "h_prev": h}, training=True)
                h = out["h_new"]
                if t >= 1:
                    losses.append(tf.reduce_mean(tf.square(out["motion"] - y[:, t])))
            loss = tf.add_n(losses) / len(losses)
        grads = tape.gradient(loss, weights)
        opt.apply_gradients(zip(grads, weights))
        return loss

    budget = args.minutes * 60.0 if args.steps is None else math.inf
    t0 = time.time()
    ema = None
    step = 0
    pbar = tqdm(total=max_steps, desc="train", unit="step", dynamic_ncols=True, mininterval=2.0)
    while step < max_steps:  # (max_steps = 0 with --epochs 0: no training)
        elapsed = time.time() - t0
        if elapsed > budget:
            break
        # cosine schedule on progress = max(step fraction, time fraction) so a time cap still anneals
        prog = max(step / max_steps, elapsed / budget)
        cur_lr = args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, prog))))
        opt.learning_rate.assign(cur_lr)
        loss = float(train_step(*(tf.constant(a) for a in batch())))
        ema = loss if ema is None else 0.98 * ema + 0.02 * loss
        step += 1
        pbar.update(1)
        if step % 20 == 0:
            pbar.set_postfix(loss=f"{ema:.5f}", epoch=f"{step / steps_per_epoch:.1f}", lr=f"{cur_lr:.1e}")
    pbar.close()
    target_power = float(np.mean([np.mean(np.square(t[k][k:])) for t in targets for k in args.skips]))
    return step_model, {"steps": step, "epochs": step / steps_per_epoch, "final_loss": ema,
                        "target_power": target_power, "seconds": time.time() - t0, "state_dim": D}


def run_float(step_model, clip: np.ndarray, D: int) -> tuple[np.ndarray, np.ndarray]:
    """The float Keras step model causally over one clip: the motion map's mean and the h_prev fed, per step."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def step(f, h):
        o = step_model({"frame": f, "h_prev": h}, training=False)
        return tf.reduce_mean(o["motion"]), o["h_new"]

    h = tf.zeros((1, D))
    means, states = [], []
    for frame in clip:
        states.append(h.numpy()[0])
        m, h = step(tf.constant(frame[None, ..., None]), h)
        means.append(float(m))
    return np.asarray(means), np.asarray(states)


def choose_warmup(means: list[np.ndarray], min_warmup: int = 1) -> int:
    """Frames to skip at clip start: the zero state's stored frame is mid-grey, so the first map
    shows motion everywhere; skip until the clip-averaged map settles near its steady level."""
    L = min(40, min(len(m) for m in means))
    per_t = np.mean([m[:L] for m in means], axis=0)
    steady = np.median(np.concatenate([m[10:] for m in means if len(m) > 10] or [per_t]))
    for t in range(L):
        if np.all(per_t[t:] <= 1.5 * steady + 1e-6):
            return max(min_warmup, t)
    return L


def convert(step_model, clips: list[np.ndarray], args: argparse.Namespace, warmup: int, out_dir: Path):
    """Float and full-integer int8 TFLite. The representative samples are real (frame, h_prev)
    pairs from the float model's causal runs over the footage at strides 1, 2, 4 and 12, so the
    int8 ranges cover the normal scene and motion up to 12 times as fast. With strides 1-2 only,
    the motion output's range ended at what Ped2's grey walkers reach: a contrasty scene's
    walkers and its cyclist then both saturated at the top and looked alike (float scored the
    synthetic cyclist at 10-16, int8 at 3-5)."""
    import tensorflow as tf

    from models.arch import build_step_model
    export = build_step_model(args.height, args.width, gru_ch=args.gru_ch, batch_size=1)
    for layer in export.layers:  # by name: the export graph orders its layers differently
        if layer.weights:
            layer.set_weights(step_model.get_layer(layer.name).get_weights())
    D = int(export.get_layer("h_new").output.shape[-1])

    pairs = []
    for clip in clips:
        for k in (1, 2, 4, 12):
            sequence = clip[::k]
            _, states = run_float(export, sequence, D)
            pairs += [(sequence[t], states[t]) for t in range(warmup, len(sequence))]
    rng = np.random.default_rng(args.seed + 1)
    pick = [pairs[i] for i in rng.choice(len(pairs), min(args.calib_samples, len(pairs)), replace=False)]
    n_gru = D - args.height * args.width

    def rep():
        for index, (frame, h) in enumerate(pick):
            frame, h = frame.copy(), h.copy()
            if index % 2 == 0:
                # Pin the frame input's range to [0, 1] for any camera (the footage may have no
                # black or white): a black and a white 4x4 block in the top-left corner, in the
                # stored previous frame too, so they do not look like motion.
                frame[:4, :4], frame[:4, 4:8] = 0.0, 1.0
                stored = h[n_gru:].reshape(args.height, args.width)
                stored[:4, :4], stored[:4, 4:8] = -1.0, 1.0
            yield {"frame": frame[None, ..., None].astype(np.float32), "h_prev": h[None].astype(np.float32)}

    float_bytes = tf.lite.TFLiteConverter.from_keras_model(export).convert()
    conv = tf.lite.TFLiteConverter.from_keras_model(export)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    int8_bytes = conv.convert()
    fpath, ipath = out_dir / f"{args.name}_float.tflite", out_dir / f"{args.name}_int8.tflite"
    fpath.write_bytes(float_bytes)
    ipath.write_bytes(int8_bytes)
    return fpath, ipath, len(pick)


def calibrate(int8_path: Path, float_path: Path, clips: list[np.ndarray], warmup: int, grid: tuple[int, int]):
    """Score the footage exactly as the agent will (its own ModelStream: preprocess, requantised
    state feedback, the motion map's mean per cell), causally from zero state with the warm-up
    skipped, for the int8 and the float model; per-cell statistics of the int8 run."""
    from agent.inference import StreamingModel
    from agent.scoring import Calibrator
    from agent.stream import ModelStream

    runs, step_ms = {}, {}
    for tag, path in (("int8", int8_path), ("float", float_path)):
        stream = ModelStream(StreamingModel(path), grid, warmup=warmup)
        maps, t0, n = [], time.perf_counter(), 0
        for clip in clips:
            stream.reset()
            for frame in np.rint(clip * 255).astype(np.uint8):
                anomaly_map = stream(frame)
                n += 1
                if anomaly_map is not None:
                    maps.append(anomaly_map.copy())
        step_ms[tag] = 1000 * (time.perf_counter() - t0) / max(1, n)
        runs[tag] = np.stack(maps)
    calibrator = Calibrator(len(runs["int8"]))
    for anomaly_map in runs["int8"]:
        calibrator.add(anomaly_map)
    q, f = runs["int8"], runs["float"]
    agree = {"map_corr": float(np.corrcoef(q.ravel(), f.ravel())[0, 1]),
             "map_mean_abs_diff": float(np.abs(q - f).mean()), "map_mean": float(f.mean()),
             "int8_step_ms": step_ms["int8"], "float_step_ms": step_ms["float"]}
    return calibrator.result(), agree


def sidecar_for(args: argparse.Namespace, names: list[str], n_frames: int, info: dict[str, Any], warmup: int,
                stats, agree: dict[str, float], grid: tuple[int, int], n_rep: int, n_params: int,
                fpath: Path, ipath: Path) -> dict[str, Any]:
    from models.arch import MAP_DOWN, MAX_SHIFT
    D, mh, mw = info["state_dim"], args.height // MAP_DOWN, args.width // MAP_DOWN
    return {
        "name": args.name,
        "format": "tflite-int8-streaming",
        "input": {"height": args.height, "width": args.width, "channels": 1, "colour": "grey",
                  "scale": 1.0 / 255.0,
                  "preprocess": "BGR->grey, cv2.resize INTER_AREA to width x height, pixel/255, then "
                                "quantise with the 'frame' input tensor's scale/zero_point"},
        "state_dim": D,
        "map": {"height": mh, "width": mw},
        "inputs": {
            "frame": f"(1,{args.height},{args.width},1) int8, grey pixel/255 in [0,1] quantised",
            "h_prev": f"(1,{D}) int8, previous h_new (dequantised, then requantised with this input's "
                      "scale/zero_point); zeros at clip start / camera reconnect"},
        "outputs": {
            "motion": f"(1,{mh},{mw},1) int8, per {MAP_DOWN}x{MAP_DOWN} block: sqrt({TARGET_SCALE:g} x mean of "
                      "speed (px/frame at the input size) x |frame - previous frame| (grey, [0,1])), as "
                      "learned from a Farneback optical-flow teacher; the agent squares it back",
            "h_new": f"(1,{D}) new state in [-1,1]: ConvGRU state ({mh}x{mw}x{args.gru_ch}, flattened) "
                     f"followed by the frame ({args.height}x{args.width}) as 2*x-1",
            "identify_by": "shape: 4-D = motion, (1,state_dim) = h_new"},
        "state_frame": {"offset": D - args.height * args.width, "encoding": "2x-1",
                        "what": "where h_prev/h_new keep the previous frame (the model's input size, row-major, "
                                "as 2*x-1): the agent brings it to the current frame's brightness when the "
                                "camera's exposure changes"},
        "warmup_frames": warmup,
        "calibration": {
            **stats.to_json(),
            "grid": list(grid),
            "how": "the agent's ModelStream over every training clip from zero state (int8 model, state "
                   "requantised on feedback), first warmup_frames of each clip skipped; per cell of the "
                   "grid, mean and std of the motion map's mean over the cell. Right for the training "
                   "scene only: other cameras calibrate on the device.",
        },
        "training": {
            "data": str(Path(args.data).resolve()), "clips": len(names), "clip_names": names,
            "frames": n_frames, "epochs": round(info["epochs"], 2), "steps": info["steps"],
            "batch": args.batch, "seq_len": args.seq_len, "skips": list(args.skips), "seed": args.seed,
            "seconds": round(info["seconds"], 1), "final_loss": info["final_loss"],
            "target_power": info["target_power"], "params": n_params, "git_commit": git_commit(),
            "teacher": "cv2.calcOpticalFlowFarneback(prev, cur, None, 0.5, 3, 9, 3, 5, 1.1, 0)",
            "max_shift": list(MAX_SHIFT), "representative_samples": n_rep, "init": args.init,
            "stopped_by": "steps" if args.steps is not None else "epochs or minutes",
        },
        "int8_vs_float": agree,
        "sha256": sha256(ipath),
        "float_model": fpath.name,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.skips = tuple(args.skips)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.time()

    from models.data import load_clips
    print(f"loading {args.data} ...", flush=True)
    named = load_clips(args.data, args.height, args.width)
    names = [n for n, _ in named]
    clips = [c for _, c in named]
    n_frames = int(sum(len(c) for c in clips))
    print(f"{len(clips)} clip(s), {n_frames} frames at {args.height}x{args.width}", flush=True)
    targets = teacher_targets(clips, tuple(sorted(set(args.skips))))

    set_seeds(args.seed)
    step_model, info = train(args, clips, targets)
    n_params = int(step_model.count_params())

    print("float causal run for the warm-up ...", flush=True)
    warmup = choose_warmup([run_float(step_model, clip, info["state_dim"])[0] for clip in clips])
    print(f"warmup_frames={warmup}", flush=True)

    print("converting (float + full-integer int8) ...", flush=True)
    fpath, ipath, n_rep = convert(step_model, clips, args, warmup, out_dir)
    if args.save_keras:  # not needed at runtime; large, keep it out of the repo
        step_model.save(out_dir / f"{args.name}.keras")

    print("int8 calibration run (LiteRT, causal, requantised state feedback) ...", flush=True)
    grid = tuple(args.grid)
    stats, agree = calibrate(ipath, fpath, clips, warmup, grid)
    sidecar = sidecar_for(args, names, n_frames, info, warmup, stats, agree, grid, n_rep, n_params, fpath, ipath)
    spath = out_dir / f"{args.name}_int8.json"
    spath.write_text(json.dumps(sidecar, indent=1) + "\n")

    print("\n==== summary ====")
    print(f"data            : {args.data}  ({len(clips)} clips, {n_frames} frames)")
    print(f"model           : {n_params} params, state_dim D={info['state_dim']}, input {args.height}x{args.width} grey")
    print(f"training        : {info['steps']} steps, {info['epochs']:.1f} epochs, T={args.seq_len}, strides "
          f"{list(args.skips)}, {info['seconds']:.0f} s, final loss (EMA) "
          + ("-" if info["final_loss"] is None else f"{info['final_loss']:.5f}")
          + f" (target power {info['target_power']:.5f})")
    print(f"warmup_frames   : {warmup}")
    for p in (ipath, fpath, spath):
        print(f"file            : {p}  {p.stat().st_size / 1024:.1f} KB")
    print(f"int8 vs float   : map corr {agree['map_corr']:.4f}, map |diff| {agree['map_mean_abs_diff']:.2e} "
          f"(map mean {agree['map_mean']:.2e})")
    print(f"step            : int8 {agree['int8_step_ms']:.2f} ms, float {agree['float_step_ms']:.2f} ms per "
          "frame (preprocess + invoke + state feedback + cell means, LiteRT, 1 thread)")
    print(f"calibration     : {stats.frames} frames, grid {grid[0]}x{grid[1]}")
    print(f"total wall time : {time.time() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
