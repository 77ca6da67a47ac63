"""Streaming CNN + ConvGRU future-frame predictor (Keras 3 functional, builtin TFLite ops only).

One step (one invoke per frame); P = input / pred_down (default pred_down=2: 32x48 for 64x96):

  h_prev (1, D) = [ ConvGRU state 8x12xC (flattened, tanh range) | previous frame at P (as 2x-1) ]
  decoder(h_prev) -> prediction of the CURRENT frame at P = previous frame + learned correction
  map   = avg_pool( (prediction - actual current frame at P)^2 ) to 8x12   -> (1, 8, 12)
  score = mean(map)                                                       -> (1, 1)
  encoder(current frame 64x96, joined by the current frame and the motion (current - previous) at P)
      -> x at 8x12;  ConvGRU(x, state) -> new state
  h_new = [new state | current frame at P (as 2x-1)]                      -> (1, D)

D = 8*12*C + P_h*P_w (C=12: 1152 + 1536 = 2688 for P = 32x48; 1536 for P = 16x24).
With zero state (clip start / reconnect) the stored frame reads as mid-grey, so the first
frames give a start-up transient (the sidecar's ``warmup_frames``).
"""
from __future__ import annotations

import keras
from keras import layers, ops

ROWS, COLS = 8, 12          # state / map grid (1/8 of 64x96)
PRED_DOWN = 4               # prediction resolution = input / 4 = 16x24


def state_dim(gru_ch: int, height: int = 64, width: int = 96, pred_down: int = PRED_DOWN) -> int:
    r, c = height // 8, width // 8
    return r * c * gru_ch + (height // pred_down) * (width // pred_down)


def _conv(ch, name, k=3, strides=1, bias=True):
    return layers.Conv2D(ch, k, strides=strides, padding="same", use_bias=bias, name=name)


def build_step_model(height: int = 64, width: int = 96, gru_ch: int = 12,
                     enc=(16, 32, 48), dec=(48, 24), batch_size: int | None = None,
                     pred_down: int = PRED_DOWN, export: bool = False) -> keras.Model:
    """One-step model. ``batch_size=None`` for training, 1 for export (no dynamic-shape ops).

    Training uses the outputs ``score``/``map``/``h_new`` (the loss is the mean squared prediction
    error). The exported model (``export=True``) outputs ``pred`` and ``h_new`` instead: the agent
    measures the error itself, in float, since a squared error does not fit one int8 scale.

    Concatenations of differently-ranged tensors are written as sums of per-branch convolutions
    (conv([a, b]) == conv_a(a) + conv_b(b)): the int8 converter forces all operands of a
    CONCATENATION to share one scale, which would otherwise propagate back into the graph inputs.
    """
    rows, cols = height // 8, width // 8
    ph, pw = height // pred_down, width // pred_down
    n_gru = rows * cols * gru_ch
    D = n_gru + ph * pw

    frame = keras.Input((height, width, 1), batch_size=batch_size, name="frame")
    h_prev = keras.Input((D,), batch_size=batch_size, name="h_prev")

    # ---- unpack the state ----
    g_prev = layers.Reshape((rows, cols, gru_ch), name="g_prev")(h_prev[:, :n_gru])
    prev_s = layers.Reshape((ph, pw, 1), name="prev_s")(h_prev[:, n_gru:])   # in [-1,1]
    prev01 = prev_s * 0.5 + 0.5

    # ---- decoder: predict the current frame (ph x pw) from h_prev only ----
    d = layers.ReLU(name="dec1_relu")(_conv(dec[0], "dec1")(g_prev))
    d = layers.UpSampling2D(8 // pred_down, name="dec_up")(d)               # to ph x pw
    d = layers.Add(name="dec2_sum")([_conv(dec[1], "dec2")(d), _conv(dec[1], "dec2_prev", bias=False)(prev_s)])
    d = layers.ReLU(name="dec2_relu")(d)
    d = layers.ReLU(name="dec3_relu")(_conv(dec[1], "dec3")(d))
    corr = _conv(1, "dec_out")(d)
    pred = prev01 + corr                                                     # previous frame + correction

    # ---- error map vs the actual current frame ----
    cur01 = layers.AveragePooling2D(pred_down, name="cur_small")(frame)     # ph x pw in [0,1]
    err = ops.square(pred - cur01)
    amap = layers.AveragePooling2D(ph // rows, name="map_pool")(err)        # 8x12x1
    amap = layers.Reshape((rows, cols), name="map")(amap)
    score = layers.Reshape((1,), name="score")(ops.mean(amap, axis=(1, 2)))

    # ---- encoder on the current frame + motion ----
    e = layers.ReLU(name="enc1_relu")(_conv(enc[0], "enc1", strides=2)(frame))
    motion = cur01 - prev01
    if pred_down == 2:  # frame-rate inputs join at 32x48
        e = layers.Add(name="enc2_sum")([_conv(enc[1], "enc2", strides=2)(e),
                                         _conv(enc[1], "enc2_cur", strides=2, bias=False)(cur01),
                                         _conv(enc[1], "enc2_mot", strides=2, bias=False)(motion)])
        e = layers.ReLU(name="enc2_relu")(e)
        e = layers.ReLU(name="enc3_relu")(_conv(enc[2], "enc3", strides=2)(e))
    else:
        e = layers.ReLU(name="enc2_relu")(_conv(enc[1], "enc2", strides=2)(e))
        e = layers.Add(name="enc3_sum")([_conv(enc[2], "enc3", strides=2)(e),
                                         _conv(enc[2], "enc3_cur", strides=2, bias=False)(cur01),
                                         _conv(enc[2], "enc3_mot", strides=2, bias=False)(motion)])
        e = layers.ReLU(name="enc3_relu")(e)

    # ---- ConvGRU at 1/8 resolution, built from Conv2D ----
    z = layers.Activation("sigmoid", name="gru_z")(
        layers.Add()([_conv(gru_ch, "gru_zx")(e), _conv(gru_ch, "gru_zh", bias=False)(g_prev)]))
    r = layers.Activation("sigmoid", name="gru_r")(
        layers.Add()([_conv(gru_ch, "gru_rx")(e), _conv(gru_ch, "gru_rh", bias=False)(g_prev)]))
    n = layers.Activation("tanh", name="gru_n")(
        layers.Add()([_conv(gru_ch, "gru_nx")(e), _conv(gru_ch, "gru_nh", bias=False)(r * g_prev)]))
    g_new = g_prev + z * (n - g_prev)                                        # (1-z) h + z n

    cur_s = cur01 * 2.0 - 1.0
    h_new = layers.Concatenate(axis=1, name="h_new")(
        [layers.Flatten(name="g_flat")(g_new), layers.Flatten(name="f_flat")(cur_s)])

    inputs = {"frame": frame, "h_prev": h_prev}
    if export:
        pred = layers.Identity(name="pred")(pred)
        return keras.Model(inputs, {"pred": pred, "h_new": h_new}, name="ped2_cnn_gru_step")
    return keras.Model(inputs, {"score": score, "map": amap, "h_new": h_new}, name="ped2_cnn_gru_step")
