"""Carry trained weights from the ABS cost volume (commit 97edae4 .. 6856e48) to the current graph.

The old cost volume gave |d| per shift (fine 9 | coarse 15 channels); the new one gives relu(d)
and relu(-d) (fine +9 -9 | coarse +15 -15). Since |d| = relu(d) + relu(-d), the layers reading
the cost volume (``c1`` and ``c2_quarter``) take each old input weight twice. The fixed layers
(cost-volume convolutions, box averages) are built, not carried. The network is the same
function (checked here to 1e-5). It re-expressed the shipped model's weights, and the model
card's steps to remake the shipped file run it; a model trained with the current graph does not
need it.

    python -m models.carry_over OLD.keras NEW.keras
"""
from __future__ import annotations

import sys

import keras
import numpy as np

from models.arch import build_step_model


def carry_over(old: keras.Model) -> keras.Model:
    new = build_step_model()
    for layer in new.layers:
        if not layer.trainable_weights:
            continue
        weights = old.get_layer(layer.name).get_weights()
        if layer.name == "c1":
            k = weights[0]
            weights[0] = np.concatenate([k[:, :, :9], k[:, :, :9], k[:, :, 9:], k[:, :, 9:]], axis=2)
        elif layer.name == "c2_quarter":
            weights[0] = np.concatenate([weights[0], weights[0]], axis=2)
        layer.set_weights(weights)
    return new


def main(argv: list[str]) -> int:
    old = keras.models.load_model(argv[0], compile=False, safe_mode=False)
    new = carry_over(old)
    rng = np.random.default_rng(0)
    x = {"frame": rng.random((4, 96, 144, 1)).astype(np.float32),
         "h_prev": rng.uniform(-1, 1, (4, int(new.get_layer("h_new").output.shape[-1]))).astype(np.float32)}
    a, b = old(x), new(x)
    worst = max(float(np.max(np.abs(np.asarray(a[k]) - np.asarray(b[k])))) for k in ("motion", "h_new"))
    print(f"largest output difference: {worst:.2e}")
    if worst > 1e-5:
        raise SystemExit("not the same function")
    new.save(argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
