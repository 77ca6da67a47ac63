"""Where a camera's model runs: on an accelerator delegate while one works, else on the CPU.

``model.delegate`` chooses: ``auto`` tries the Edge TPU (with the ``*_edgetpu.tflite`` variant of
the model, which ``edgetpu_compiler`` makes), then the GPU/NPU external delegates found on the box,
then the CPU (XNNPACK); ``cpu``, ``edgetpu``, ``gpu`` and ``external`` try only that one.

Every camera keeps a CPU interpreter ready beside the accelerated one, so a failure costs no
frame: a delegate that does not load leaves the camera on the CPU from the start, and an invoke
that fails is rerun at once on the CPU with the same input and state. A camera on the CPU against
its configuration tries its accelerator again every ``reprobe_interval_s`` (between two frames)
and moves back when it works. :attr:`DelegatedModel.status` says what runs and why; it goes into
the device's ``state`` message.

The accelerated model must share the CPU model's input and state quantization (the Edge TPU
compiler keeps it), because the preprocessing and the fed-back GRU state are built for the latter.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agent.config import ModelConfig
from agent.errors import ModelError
from agent.inference import ModelInfo, Quant, StreamingModel, runtime_module

log = logging.getLogger(__name__)

EDGETPU_LIBRARY = "libedgetpu.so.1"
#: External GPU/NPU delegates under the names their vendors ship them: TensorFlow's GPU delegate
#: (OpenCL/OpenGL, e.g. Mali) and VeriSilicon's VX delegate (the NPU of i.MX 8M Plus boards).
GPU_LIBRARIES = ("libtensorflowlite_gpu_delegate.so", "libvx_delegate.so")
LIBRARY_DIRS = ("/usr/lib", "/usr/local/lib", f"/usr/lib/{platform.machine()}-linux-gnu")


@dataclass(frozen=True)
class Accelerator:
    """One delegate to try: its kind, its library, its options and the model file it runs."""

    kind: str
    library: str
    options: dict[str, str]
    model_path: Path


def edgetpu_variant(path: Path) -> Path:
    """Where ``edgetpu_compiler`` writes its output for ``path``: ``<stem>_edgetpu.tflite``."""
    return path.with_name(f"{path.stem}_edgetpu.tflite")


def find_library(name: str, dirs: tuple[str, ...] = LIBRARY_DIRS) -> str | None:
    return next((str(Path(d) / name) for d in dirs if (Path(d) / name).is_file()), None)


def accelerators(config: ModelConfig, model_path: Path) -> tuple[list[Accelerator], list[str]]:
    """The accelerators ``config`` asks to try, in order, and why others were not candidates."""
    kinds = ("edgetpu", "gpu") if config.delegate == "auto" else (config.delegate,)
    options = dict(config.delegate_options)
    found: list[Accelerator] = []
    skipped: list[str] = []
    for kind in kinds:
        if kind == "edgetpu":
            variant = edgetpu_variant(model_path)
            if variant.is_file():
                found.append(Accelerator(kind, config.delegate_library or EDGETPU_LIBRARY, options, variant))
            else:
                skipped.append(f"edgetpu: no {variant.name} next to the model (see edgetpu_compiler)")
        elif kind == "gpu":
            libraries = [config.delegate_library] if config.delegate_library else [
                path for path in map(find_library, GPU_LIBRARIES) if path is not None
            ]
            if not libraries:
                skipped.append(f"gpu: none of {', '.join(GPU_LIBRARIES)} in {', '.join(LIBRARY_DIRS)}")
            found.extend(Accelerator(kind, library, options, model_path) for library in libraries)
        elif kind == "external":
            assert config.delegate_library is not None  # the config schema requires it
            found.append(Accelerator(kind, config.delegate_library, options, model_path))
    return found, skipped


def same_interface(a: StreamingModel, b: StreamingModel) -> bool:
    """Whether ``b`` can take the inputs and state made for ``a``."""
    def key(m: StreamingModel) -> tuple[Any, ...]:
        return m.frame_shape, m.frame_quant, m.state_in_quant, m.map_shape, m.zero_state().shape

    return key(a) == key(b)


class DelegatedModel:
    """A :class:`StreamingModel` for one camera that runs on an accelerator when it can.

    ``on_change`` is called (on the pipeline thread) whenever the delegate in use changes.
    """

    def __init__(
        self,
        config: ModelConfig,
        *,
        on_change: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.on_change = on_change
        self._clock = clock
        self.cpu = StreamingModel(config.path, num_threads=config.num_threads)
        self._candidates, skipped = accelerators(config, self.info.path)
        self._accelerator: Accelerator | None = None
        self._accelerated: StreamingModel | None = None
        self._next_probe = float("inf")
        self.fallbacks = 0
        self.reason = "configured" if config.delegate == "cpu" else "; ".join(skipped)
        if self._candidates:
            self._probe(initial_skipped=skipped)

    # -- what the stream needs: the CPU model's interface (the accelerated one shares it) --
    @property
    def info(self) -> ModelInfo:
        return self.cpu.info

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return self.cpu.frame_shape

    @property
    def frame_quant(self) -> Quant:
        return self.cpu.frame_quant

    @property
    def map_shape(self) -> tuple[int, int]:
        return self.cpu.map_shape

    @property
    def state_in_quant(self) -> Quant:
        return self.cpu.state_in_quant  # the same for every variant (same_interface)

    @property
    def input_size(self) -> tuple[int, int, int]:
        return self.cpu.input_size

    def zero_state(self) -> np.ndarray:
        return self.cpu.zero_state()

    # -- running -------------------------------------------------------------------------
    def step(self, frame: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._accelerated is None and self._clock() >= self._next_probe:
            self._probe()
        accelerated = self._accelerated
        if accelerated is not None:
            try:
                return accelerated.step(frame, state)
            except (RuntimeError, ValueError, OSError) as error:
                assert self._accelerator is not None
                self._fall_back(f"{self._accelerator.kind}: invoke failed: {error}")
        return self.cpu.step(frame, state)

    @property
    def delegate(self) -> str:
        """The delegate in use: ``cpu`` or the accelerator's kind."""
        accelerator = self._accelerator
        return "cpu" if accelerator is None else accelerator.kind

    @property
    def status(self) -> dict[str, Any]:
        """For the ``state`` message: what runs, on which library and model, and why not faster."""
        accelerator = self._accelerator
        return {
            "delegate": self.delegate,
            "library": None if accelerator is None else accelerator.library,
            "model_file": (self.info.path if accelerator is None else accelerator.model_path).name,
            "reason": self.reason,
            "fallbacks": self.fallbacks,
        }

    def _probe(self, initial_skipped: list[str] | None = None) -> None:
        """Move to the first candidate that loads and runs a frame; else stay on the CPU."""
        failures = list(initial_skipped or [])
        for accelerator in self._candidates:
            try:
                model = self._open(accelerator)
            except (ModelError, OSError, ValueError, RuntimeError) as error:
                failures.append(f"{accelerator.kind}: {accelerator.library}: {str(error).strip()}")
                continue
            self._accelerator, self._accelerated = accelerator, model
            self._next_probe = float("inf")
            self.reason = ""
            log.info("model %s runs on %s (%s)", self.info.name, accelerator.kind, accelerator.library)
            self._changed()
            return
        self.reason = "; ".join(failures)
        self._next_probe = self._clock() + self.config.reprobe_interval_s
        log.warning("model %s runs on the CPU: %s; trying again in %.0f s", self.info.name, self.reason,
                    self.config.reprobe_interval_s)

    def _open(self, accelerator: Accelerator) -> StreamingModel:
        module, _ = runtime_module()
        delegate = module.load_delegate(accelerator.library, accelerator.options)
        model = StreamingModel(accelerator.model_path, num_threads=self.config.num_threads, delegates=[delegate])
        if not same_interface(self.cpu, model):
            raise ModelError(f"{accelerator.model_path.name} has other inputs or quantization than "
                             f"{self.info.path.name}; recompile it from that file")
        model.step(np.zeros(model.frame_shape, model.frame_quant.dtype), model.zero_state())
        return model

    def _fall_back(self, reason: str) -> None:
        self._accelerator = self._accelerated = None
        self.fallbacks += 1
        self.reason = reason
        self._next_probe = self._clock() + self.config.reprobe_interval_s
        log.warning("model %s: %s; continuing on the CPU, trying again in %.0f s", self.info.name, reason,
                    self.config.reprobe_interval_s)
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()
