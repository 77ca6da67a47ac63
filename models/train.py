"""Train the streaming CNN+ConvGRU future-frame predictor on normal footage and export int8 TFLite.

    python -m models.train --data /work/shared/data/ucsd-ped2/training/frames --out models/

--data accepts a folder of clip sub-folders of images, a flat folder of images, or a video file.
Writes <out>/ped2_cnn_gru_int8.tflite, <out>/ped2_cnn_gru_float.tflite and the sidecar
<out>/ped2_cnn_gru_int8.json (input format, state size, warm-up, per-cell calibration).
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

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

NAME = "ped2_cnn_gru"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="folder of clip folders, flat image folder, or video file")
    p.add_argument("--out", default="models/", help="output folder")
    p.add_argument("--name", default=NAME, help="file name stem")
    p.add_argument("--epochs", type=int, default=40, help="epochs (one epoch = #windows / batch steps)")
    p.add_argument("--minutes", type=float, default=9.0, help="wall-time cap for the training loop")
    p.add_argument("--seq-len", type=int, default=8, help="unrolled training sequence length T")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=96)
    p.add_argument("--pred-down", type=int, default=2, choices=(2, 4),
                   help="prediction resolution = input / this (4: 16x24, 2: 32x48)")
    p.add_argument("--gru-ch", type=int, default=12, help="ConvGRU channels at 1/8 resolution")
    p.add_argument("--loss-skip", type=int, default=1, help="unrolled steps from zero state excluded from the loss")
    p.add_argument("--calib-samples", type=int, default=600, help="representative samples for int8 calibration")
    p.add_argument("--init", default=None, help="start from a saved .keras step model (with --epochs 0: convert only)")
    p.add_argument("--save-keras", action="store_true", help="also save the trained Keras step model (<name>.keras)")
    p.add_argument("--grid", type=int, nargs=2, default=(4, 6), metavar=("ROWS", "COLS"),
                   help="cells of the calibration statistics in the sidecar (the agent's default grid)")
    return p.parse_args(argv)


def set_seeds(seed: int):
    import tensorflow as tf
    import keras
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
                             cwd=Path(__file__).resolve().parent, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except Exception:
        return None


# --------------------------------------------------------------------------------------------
def train(args, clips):
    import tensorflow as tf
    import keras
    from tqdm import tqdm
    from models.arch import build_step_model

    H, W, T, B = args.height, args.width, args.seq_len, args.batch
    if args.init:
        step_model = keras.models.load_model(args.init, compile=False)
    else:
        step_model = build_step_model(H, W, gru_ch=args.gru_ch, pred_down=args.pred_down)
    D = step_model.inputs[1].shape[-1] if step_model.inputs[1].name == "h_prev" else None
    D = int(step_model.get_layer("h_new").output.shape[-1])

    # windows of T consecutive frames
    windows = [(ci, s) for ci, c in enumerate(clips) for s in range(len(c) - T + 1)]
    if not windows:
        raise ValueError(f"all clips shorter than --seq-len {T}")
    steps_per_epoch = max(1, len(windows) // B)
    max_steps = args.epochs * steps_per_epoch
    rng = np.random.default_rng(args.seed)

    def batch():
        idx = rng.integers(0, len(windows), B)
        x = np.stack([clips[windows[i][0]][windows[i][1]:windows[i][1] + T] for i in idx])
        flip = rng.random(B) < 0.5
        x[flip] = x[flip][..., ::-1]
        # mild global brightness/contrast jitter (camera gain), clipped to [0,1]
        g = rng.uniform(0.9, 1.1, (B, 1, 1, 1)).astype(np.float32)
        o = rng.uniform(-0.05, 0.05, (B, 1, 1, 1)).astype(np.float32)
        x = np.clip(x * g + o, 0.0, 1.0)
        return x[..., None].astype(np.float32)

    opt = keras.optimizers.Adam(learning_rate=args.lr, clipnorm=1.0)
    weights = step_model.trainable_variables

    @tf.function(reduce_retracing=True)
    def train_step(x):
        with tf.GradientTape() as tape:
            h = tf.zeros((tf.shape(x)[0], D))
            losses = []
            for t in range(T):  # unrolled, shared weights
                out = step_model({"frame": x[:, t], "h_prev": h}, training=True)
                h = out["h_new"]
                if t >= args.loss_skip:
                    losses.append(tf.reduce_mean(out["score"]))
            loss = tf.add_n(losses) / len(losses)
        grads = tape.gradient(loss, weights)
        opt.apply_gradients(zip(grads, weights))
        return loss

    budget = args.minutes * 60.0
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
        loss = float(train_step(tf.constant(batch())))
        ema = loss if ema is None else 0.98 * ema + 0.02 * loss
        step += 1
        pbar.update(1)
        if step % 20 == 0:
            pbar.set_postfix(loss=f"{ema:.5f}", epoch=f"{step / steps_per_epoch:.1f}", lr=f"{cur_lr:.1e}")
    pbar.close()
    secs = time.time() - t0
    if ema is None:
        ema = float("nan")
    return step_model, dict(steps=step, epochs=step / steps_per_epoch, final_loss=ema, seconds=secs,
                            steps_per_epoch=steps_per_epoch, state_dim=D)


def run_float(step_model, clips, D):
    """Run the float Keras step model causally over all clips (batched across clips, padded).

    Returns per clip: scores (N,), maps (N,r,c), h_prev used at each step (N, D)."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def step(f, h):
        o = step_model({"frame": f, "h_prev": h}, training=False)
        return o["score"], o["map"], o["h_new"]

    n = len(clips)
    L = max(len(c) for c in clips)
    h = tf.zeros((n, D))
    res = [dict(scores=[], maps=[], h_prev=[]) for _ in clips]
    for t in range(L):
        f = np.stack([c[min(t, len(c) - 1)] for c in clips])[..., None]
        hp = h.numpy()
        s, m, h = step(tf.constant(f), h)
        s, m = s.numpy(), m.numpy()
        for i, c in enumerate(clips):
            if t < len(c):
                res[i]["scores"].append(s[i, 0])
                res[i]["maps"].append(m[i])
                res[i]["h_prev"].append(hp[i])
    return [{k: np.asarray(v, np.float32) for k, v in r.items()} for r in res]


def choose_warmup(float_runs, min_warmup=2):
    """Frames to skip at clip start: until the clip-averaged score settles near its steady level."""
    L = min(len(r["scores"]) for r in float_runs)
    L = min(L, 40)
    per_t = np.mean([r["scores"][:L] for r in float_runs], axis=0)
    steady = np.median(np.concatenate([r["scores"][10:] for r in float_runs]))
    w = min_warmup
    for t in range(L):
        if np.all(per_t[t:] <= 1.5 * steady):
            w = max(min_warmup, t)
            break
    return int(w), per_t


def convert(step_model, clips, float_runs, warmup, n_samples, seed, out_dir: Path, name: str):
    import tensorflow as tf

    from models.arch import build_step_model
    # export copy with a fixed batch of 1 (no SHAPE/PACK ops for dynamic reshapes)
    H, W = clips[0].shape[1:3]
    n_gru = int(step_model.get_layer("g_flat").output.shape[-1])
    gru_ch = n_gru // ((H // 8) * (W // 8))
    pred_down = H // int(step_model.get_layer("cur_small").output.shape[1])
    export = build_step_model(H, W, gru_ch=gru_ch, batch_size=1, pred_down=pred_down, export=True)
    for layer in export.layers:  # by name: the export graph orders its layers differently
        if layer.weights:
            layer.set_weights(step_model.get_layer(layer.name).get_weights())

    # representative samples: real (frame, h_prev) pairs from the float model's causal run,
    # after the warm-up (the start-up transient would stretch the error range and cost resolution)
    rng = np.random.default_rng(seed + 1)
    pool = [(ci, t) for ci, c in enumerate(clips) for t in range(warmup, len(c))]
    pick = [pool[i] for i in rng.choice(len(pool), min(n_samples, len(pool)), replace=False)]

    def rep():
        for k, (ci, t) in enumerate(pick):
            h = float_runs[ci]["h_prev"][t].copy()
            f = clips[ci][t].copy()
            if k % 2 == 0:
                # pin the input ranges to the full interface range (frame [0,1], h [-1,1]) for any
                # camera: a black and a white 4x4 block in the top-left corner, consistently in the
                # stored previous frame (so the prediction error there stays normal)
                f[0:pred_down, 0:pred_down], f[0:pred_down, pred_down:2 * pred_down] = 0.0, 1.0
                h[n_gru + 0], h[n_gru + 1] = -1.0, 1.0
            yield {"frame": f[None, ..., None].astype(np.float32), "h_prev": h[None].astype(np.float32)}

    conv = tf.lite.TFLiteConverter.from_keras_model(export)
    float_bytes = conv.convert()
    conv = tf.lite.TFLiteConverter.from_keras_model(export)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    int8_bytes = conv.convert()
    fpath, ipath = out_dir / f"{name}_float.tflite", out_dir / f"{name}_int8.tflite"
    fpath.write_bytes(float_bytes)
    ipath.write_bytes(int8_bytes)
    return fpath, ipath, len(pick)


def calibrate(int8_path: Path, float_path: Path, clips, warmup: int, grid: tuple[int, int]):
    """Score the training clips exactly as the agent will (its own ModelStream: preprocess,
    requantised state feedback, float prediction error per cell), causally from zero state with
    the warm-up skipped, for the int8 and the float model; per-cell statistics of the int8 run.
    """
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
                    maps.append(anomaly_map)
        step_ms[tag] = 1000 * (time.perf_counter() - t0) / max(1, n)
        runs[tag] = np.stack(maps)
    calibrator = Calibrator(len(runs["int8"]))
    for anomaly_map in runs["int8"]:
        calibrator.add(anomaly_map)
    stats = calibrator.result()
    q, f = runs["int8"], runs["float"]
    agree = dict(
        map_corr=float(np.corrcoef(q.ravel(), f.ravel())[0, 1]),
        map_mean_abs_diff=float(np.abs(q - f).mean()),
        map_mean=float(f.mean()),
        int8_step_ms=step_ms["int8"],
        float_step_ms=step_ms["float"],
    )
    return stats, agree


def main(argv=None):
    args = parse_args(argv)
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

    set_seeds(args.seed)
    step_model, info = train(args, clips)
    D = info["state_dim"]
    n_params = int(step_model.count_params())

    print("float causal run for warm-up and calibration states ...", flush=True)
    float_runs = run_float(step_model, clips, D)
    warmup, per_t = choose_warmup(float_runs)
    print(f"warmup_frames={warmup}; mean score by step: " +
          " ".join(f"{v:.4f}" for v in per_t[:8]), flush=True)

    print("converting (float + full-integer int8) ...", flush=True)
    fpath, ipath, n_rep = convert(step_model, clips, float_runs, warmup, args.calib_samples,
                                  args.seed, out_dir, args.name)
    if args.save_keras:  # not needed at runtime; large, keep it out of the repo
        step_model.save(out_dir / f"{args.name}.keras")

    print("int8 calibration run (LiteRT, causal, requantised state feedback) ...", flush=True)
    grid = tuple(args.grid)
    stats, agree = calibrate(ipath, fpath, clips, warmup, grid)
    ph, pw = args.height // args.pred_down, args.width // args.pred_down
    sidecar = {
        "name": args.name,
        "format": "tflite-int8-streaming",
        "input": {"height": args.height, "width": args.width, "channels": 1, "colour": "grey",
                  "scale": 1.0 / 255.0,
                  "preprocess": "BGR->grey, cv2.resize INTER_AREA to width x height, pixel/255, then "
                                "quantise with the 'frame' input tensor's scale/zero_point"},
        "state_dim": D,
        "prediction": {"height": ph, "width": pw},
        "inputs": {
            "frame": f"(1,{args.height},{args.width},1) int8, grey pixel/255 in [0,1] quantised",
            "h_prev": f"(1,{D}) int8, previous h_new (dequantised, then requantised with this input's "
                      "scale/zero_point); zeros at clip start / camera reconnect"},
        "outputs": {
            "pred": f"(1,{ph},{pw},1) int8, the current frame (grey, [0,1], area-averaged to {ph}x{pw}) as "
                    "predicted from h_prev alone: the previous frame plus a learned correction",
            "h_new": f"(1,{D}) new state in [-1,1]: ConvGRU state ({args.height // 8}x{args.width // 8}x"
                     f"{args.gru_ch}, flattened) followed by the current frame at {ph}x{pw} as 2*x-1",
            "identify_by": "shape: 4-D = pred, (1,state_dim) = h_new"},
        "warmup_frames": warmup,
        "calibration": {
            **stats.to_json(),
            "grid": list(grid),
            "how": "the agent's ModelStream over every training clip from zero state (int8 model, state "
                   "requantised on feedback), first warmup_frames of each clip skipped; per cell of the "
                   "grid, mean and std of the mean squared error between pred and the frame at "
                   f"{ph}x{pw}. Right for the training scene only: other cameras calibrate on the device.",
        },
        "training": {
            "data": str(Path(args.data).resolve()), "clips": len(clips), "clip_names": names,
            "frames": n_frames, "epochs": round(info["epochs"], 2), "steps": info["steps"],
            "batch": args.batch, "seq_len": args.seq_len, "seed": args.seed,
            "seconds": round(info["seconds"], 1), "final_loss": info["final_loss"],
            "params": n_params, "git_commit": git_commit(),
            "representative_samples": n_rep,
            "init": args.init,
        },
        "int8_vs_float": agree,
        "sha256": sha256(ipath),
        "float_model": fpath.name,
    }
    spath = out_dir / f"{args.name}_int8.json"
    spath.write_text(json.dumps(sidecar, indent=1) + "\n")

    print("\n==== summary ====")
    print(f"data            : {args.data}  ({len(clips)} clips, {n_frames} frames)")
    print(f"model           : {n_params} params, state_dim D={D}, input {args.height}x{args.width} grey")
    print(f"training        : {info['steps']} steps, {info['epochs']:.1f} epochs, T={args.seq_len}, "
          f"{info['seconds']:.0f} s, final loss (EMA) {info['final_loss']:.6f}")
    print(f"warmup_frames   : {warmup}")
    for p in (ipath, fpath, spath):
        print(f"file            : {p}  {p.stat().st_size / 1024:.1f} KB")
    print(f"int8 vs float   : map corr {agree['map_corr']:.4f}, map |diff| {agree['map_mean_abs_diff']:.2e} "
          f"(map mean {agree['map_mean']:.2e})")
    print(f"step            : int8 {agree['int8_step_ms']:.2f} ms, float {agree['float_step_ms']:.2f} ms per "
          "frame (preprocess + invoke + state feedback + error map, LiteRT, 1 thread)")
    print(f"calibration     : {stats.frames} frames, grid {grid[0]}x{grid[1]}")
    print(f"total wall time : {time.time() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
