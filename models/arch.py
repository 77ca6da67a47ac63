"""Streaming CNN + ConvGRU motion model (Keras 3 functional, builtin int8 TFLite ops only).

One step (one invoke per frame), for an input of H x W (default 96 x 144):

  h_prev (1, D) = [ ConvGRU state (H/4 x W/4 x C, flattened, tanh range) | previous frame (as 2x-1) ]
  cost volume  = frame - previous frame shifted by (dy, dx), as its positive and negative parts:
                 every shift within +-1 px at H x W (9), and within +-1 row, +-2 columns at
                 H/2 x W/2 and at H/4 x W/4 (15 each, reaching 4 and 8 px at H x W), box-averaged
  features     = convolutions of the cost volume -> H/4 x W/4
  ConvGRU(features, state) -> new state (temporal context: how things moved in the last frames)
  motion       = a map (H/4 x W/4): the square root of how fast things move where the picture changes
  h_new        = [new state | frame (as 2x-1)]

D = (H/4)(W/4)C + H W (C = 12: 10,368 + 13,824 = 24,192 for 96 x 144).

Why a cost volume: people in Ped2 move 0.2-0.4 px per frame at 144 px width, cyclists and
skaters 1-2 px; how well the previous frame matches the current one at each small shift is the
evidence of speed, and it is cheap in int8 (one fixed convolution per level). The network
learns to read speed from it (trained against a Farneback optical-flow teacher, see
:mod:`models.train`), and the GRU to integrate it over frames. Concatenations join tensors of one
scale only (the int8 converter gives all operands of a CONCATENATION one scale).
"""
from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

#: The motion map is the input downsampled by this much (96 x 144 -> 24 x 36).
MAP_DOWN = 4
#: Shifts of the coarse (half-size) cost volume: +-rows, +-columns.
MAX_SHIFT = (1, 2)


def state_dim(gru_ch: int, height: int, width: int) -> int:
    return (height // MAP_DOWN) * (width // MAP_DOWN) * gru_ch + height * width


def _conv(ch: int, name: str, k: int = 3, strides: int = 1, bias: bool = True) -> layers.Conv2D:
    return layers.Conv2D(ch, k, strides=strides, padding="same", use_bias=bias, name=name)


def _window_counts(size: int, stride: int, n_in: int) -> np.ndarray:
    """How many of a 'same'-padded window's ``size`` inputs fall inside the input, per output."""
    n_out = -(-n_in // stride)
    before = max((n_out - 1) * stride + size - n_in, 0) // 2
    starts = np.arange(n_out) * stride - before
    return np.minimum(starts + size, n_in) - np.maximum(starts, 0)


@keras.saving.register_keras_serializable(package="edge_agent_models")
class BoxAverage(layers.Layer):
    """AveragePooling2D, computed as a fixed convolution (each channel from itself only; with
    'same' padding, then a fixed per-position scale, so a border output averages only the inputs
    inside, as pooling does): the same function, faster in int8.

    In int8, AVERAGE_POOL_2D is not taken by XNNPACK and runs on the reference kernel (0.41 ms to
    pool 30 channels at 48x72 here, most of a step). DEPTHWISE_CONV_2D would be fastest on LiteRT
    but is slow on tflite-runtime 2.14. The whole model's invoke, one thread, LiteRT /
    tflite-runtime 2.14: with pools 1.39 / 2.84 ms, depthwise 0.54 / 5.28 ms, these
    convolutions 0.62 / 3.51 ms.
    """

    def __init__(self, size: int, strides: int | None = None, padding: str = "valid", **kwargs) -> None:
        super().__init__(trainable=False, **{k: v for k, v in kwargs.items() if k != "trainable"})
        self.size, self.strides, self.padding = size, strides or size, padding

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        height, width, channels = input_shape[1:]
        self._kernel = np.einsum("hw,cd->hwcd", np.full((self.size, self.size), 1.0 / self.size ** 2, np.float32),
                                 np.eye(channels, dtype=np.float32))
        self._scale = None
        if self.padding == "same":
            counts = np.outer(_window_counts(self.size, self.strides, height),
                              _window_counts(self.size, self.strides, width))
            self._scale = (self.size ** 2 / counts).astype(np.float32)[None, :, :, None]

    def call(self, x):
        y = ops.conv(x, self._kernel, strides=self.strides, padding=self.padding)
        return y if self._scale is None else y * self._scale

    def get_config(self) -> dict:
        return {**super().get_config(), "size": self.size, "strides": self.strides, "padding": self.padding}


def _costs(frame, previous, max_shift: tuple[int, int], name: str):
    """The cost volume: for every shift (dy, dx) within +-max_shift, frame - previous shifted by
    (dy, dx), split into its positive and negative parts (relu(d), relu(-d); their sum is |d|).

    One fixed convolution over [frame, previous] computes every difference at once, with the
    relu fused into it. As separate slices, subtractions and ABS ops (39 of each) it cost about a
    third of the step in op dispatch, and ABS is not an Edge TPU op.
    """
    ry, rx = max_shift
    shifts = [(dy, dx) for dy in range(-ry, ry + 1) for dx in range(-rx, rx + 1)]
    kernel = np.zeros((2 * ry + 1, 2 * rx + 1, 2, 2 * len(shifts)), np.float32)
    for k, (dy, dx) in enumerate(shifts):
        for sign, channel in ((1.0, k), (-1.0, len(shifts) + k)):
            kernel[ry, rx, 0, channel] += sign
            kernel[ry + dy, rx + dx, 1, channel] -= sign
    pair = layers.Concatenate(axis=-1, name=f"{name}_pair")([frame, previous])
    conv = layers.Conv2D(2 * len(shifts), kernel.shape[:2], padding="same", use_bias=False, activation="relu",
                         kernel_initializer=keras.initializers.Constant(kernel), trainable=False, name=f"{name}_cost")
    return conv(pair)


def build_step_model(height: int = 96, width: int = 144, gru_ch: int = 12, batch_size: int | None = None,
                     max_shift: tuple[int, int] = MAX_SHIFT) -> keras.Model:
    """One-step model. ``batch_size=None`` for training, 1 for export (no dynamic-shape ops)."""
    mh, mw = height // MAP_DOWN, width // MAP_DOWN
    n_gru = mh * mw * gru_ch

    frame = keras.Input((height, width, 1), batch_size=batch_size, name="frame")
    h_prev = keras.Input((n_gru + height * width,), batch_size=batch_size, name="h_prev")
    g_prev = layers.Reshape((mh, mw, gru_ch), name="g_prev")(h_prev[:, :n_gru])
    previous = layers.Reshape((height, width, 1), name="prev_s")(h_prev[:, n_gru:]) * 0.5 + 0.5

    # Two-level cost volume: +-1 px at the input size, +-2 columns / +-1 row at half size (up to
    # 4 px at the input size) for cyclists and cars; both at H/2 x W/2.
    fine = _costs(frame, previous, (1, 1), "fine")
    fine = BoxAverage(4, strides=2, padding="same", name="fine_pool")(fine)
    coarse_frame = BoxAverage(2, name="frame_half")(frame)
    coarse_prev = BoxAverage(2, name="prev_half")(previous)
    coarse = _costs(coarse_frame, coarse_prev, max_shift, "coarse")
    coarse = BoxAverage(3, strides=1, padding="same", name="coarse_pool")(coarse)
    cost = layers.Concatenate(axis=-1, name="cost")([fine, coarse])                          # H/2 x W/2
    # A third level at quarter size reaches 8 px (cars, fast cyclists); it joins at H/4 x W/4.
    quarter = _costs(BoxAverage(2, name="frame_quarter")(coarse_frame),
                     BoxAverage(2, name="prev_quarter")(coarse_prev), max_shift, "quarter")
    quarter = BoxAverage(3, strides=1, padding="same", name="quarter_pool")(quarter)
    e = layers.ReLU(name="c1_relu")(_conv(32, "c1", k=1)(cost))
    e = layers.ReLU(name="c2_relu")(layers.Add(name="c2_sum")(
        [_conv(32, "c2", strides=2)(e), _conv(32, "c2_quarter", k=1, bias=False)(quarter)]))  # H/4 x W/4

    z = layers.Activation("sigmoid", name="gru_z")(
        layers.Add()([_conv(gru_ch, "gru_zx")(e), _conv(gru_ch, "gru_zh", bias=False)(g_prev)]))
    r = layers.Activation("sigmoid", name="gru_r")(
        layers.Add()([_conv(gru_ch, "gru_rx")(e), _conv(gru_ch, "gru_rh", bias=False)(g_prev)]))
    n = layers.Activation("tanh", name="gru_n")(
        layers.Add()([_conv(gru_ch, "gru_nx")(e), _conv(gru_ch, "gru_nh", bias=False)(r * g_prev)]))
    g_new = g_prev + z * (n - g_prev)                                                        # (1-z) h + z n

    d = layers.ReLU(name="head_relu")(layers.Add(name="head_sum")(
        [_conv(32, "head_e", k=1)(e), _conv(32, "head_g", k=1, bias=False)(g_new)]))
    motion = layers.ReLU(name="motion")(_conv(1, "head_out", k=1)(d))
    h_new = layers.Concatenate(axis=1, name="h_new")(
        [layers.Flatten(name="g_flat")(g_new), layers.Flatten(name="f_flat")(frame * 2.0 - 1.0)])
    return keras.Model({"frame": frame, "h_prev": h_prev}, {"motion": motion, "h_new": h_new},
                       name="motion_cnn_gru_step")
