"""Train, evaluate and save the bundled demo model (``rt-eda train-demo-model``).

Two architectures (``--arch``, see :func:`build_demo_model`), both fully convolutional with
input ``(None, None, 2)`` = structure + marker after the rescale worker's preprocessing and
output ``(None, None, 1)`` = a sigmoid event map of the input's size:

- ``lowres`` (the bundled ``demo.keras``, the default): a stride-4 convolution, three dilated
  3 x 3 convolutions at a quarter of the resolution, a bilinear upsampling back; it runs at any
  height and width that are multiples of 4, which
  :class:`~rt_eda.workers.KerasRescaleWorker` guarantees by cropping.
- ``unet`` (``demo_v1.keras``, the demo model until issue 17): a two-level U-Net at full
  resolution (``rt-eda train-demo-model --arch unet --base-filters 8`` retrains it).

Data: the synthetic source (:mod:`rt_eda.sources.synthetic`) at 512 x 512 ``uint16`` with
frequent events, preprocessed by the rescale worker's own code at full size (so the per-frame
stretches see what they see in a run), then cropped (``--crop``, one crop on the event when
there is one) and flipped/rotated; a quarter of the frames are taken near an event's start or
end, where its intensity crosses 0.2. Target per pixel: 1 inside the core of a focus
(``event_mask >= intensity / 2``) whose intensity is at least 0.2 (the source's
``has_event`` threshold), else 0; the loss is a pixel-weighted binary cross-entropy (positive
pixels weigh ``--pos-weight``).

Evaluation, on held-out synthetic sources (other seeds, default event schedule): per frame,
decision = maximum of the output map at full size; an event is detected when the decision
exceeds the binary interpreter's default upper threshold 0.48; truth = ``has_event`` (intensity
>= 0.2) at the marker frame's exposure time. Precision, recall, F1 (and the same at the lower
threshold 0.3), training time, epochs, losses, parameter count and the FLOPs of one
``image_size`` forward pass (:func:`rt_eda.workers.count_flops`) go to ``demo.json`` beside the
model, with the median inference time at 512 x 512 (batch 1) for ``predict_on_batch`` and for
a compiled call.

Reproducible: every random choice is seeded (``--seed``), TensorFlow runs with op determinism
and a fixed thread count (``--threads``, default 2).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rt_eda.core.errors import ConfigError
from rt_eda.workers import (
    INFERENCE_MODES,
    DemoModelWorker,
    KerasRescaleWorker,
    KerasWorker,
    WorkerSettings,
    configure_threads,
    count_flops,
    demo_model_path,
)

if TYPE_CHECKING:
    import keras

    from rt_eda.sources.synthetic import SyntheticSource

__all__ = ["TrainConfig", "build_demo_model", "evaluate", "main", "make_training_data", "train"]

log = logging.getLogger(__name__)

UPPER_THRESHOLD = 0.48
LOWER_THRESHOLD = 0.3
EVENT_MIN_INTENSITY = 0.2


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Everything that determines the demo model (recorded in ``demo.json``)."""

    seed: int = 0
    train_seeds: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    frames_per_seed: int = 70
    crops_per_frame: int = 3
    crop: int = 128
    image_size: int = 512
    event_every_s: float = 4.0
    edge_fraction: float = 0.25
    base_filters: int = 12
    epochs: int = 10
    batch_size: int = 16
    learning_rate: float = 2e-3
    pos_weight: float = 10.0
    eval_seeds: tuple[int, ...] = (101, 102, 103)
    eval_frames_per_seed: int = 150
    eval_step_s: float = 0.37
    threads: int = 2
    arch: str = "lowres"
    downsample: int = 4
    dilations: tuple[int, ...] = (1, 2, 4)
    separable: bool = False


ARCHS = ("unet", "lowres")
"""``--arch`` values (see :func:`build_demo_model`)."""


def build_demo_model(cfg: TrainConfig | None = None) -> keras.Model:
    """The demo network of ``cfg.arch``: ``(None, None, 2) -> (None, None, 1)`` sigmoid.

    - ``"unet"`` (``demo_v1.keras``): a U-Net with two pooling levels, ``base_filters``,
      ``2 * base_filters`` and ``4 * base_filters`` channels, every level at its full
      resolution; height and width must be multiples of 4.
    - ``"lowres"`` (the bundled ``demo.keras``): an early strided downsampling (a
      ``downsample x downsample`` convolution with that stride, ``base_filters`` channels),
      then a 3 x 3 convolution per entry of ``dilations`` (that dilation rate; depthwise
      separable with ``separable``) at ``1 / downsample`` of the resolution, a 1 x 1 sigmoid
      and a bilinear upsampling by ``downsample``: the output has the input's size whenever
      height and width are multiples of ``downsample`` (1, 2 or 4, so the rescale worker's
      crop to multiples of 4 always fits). No pooling inside, so no other size constraint.
    """
    import keras
    from keras import layers

    cfg = cfg or TrainConfig()
    if cfg.arch not in ARCHS:
        raise ConfigError(f"--arch must be one of {list(ARCHS)}, got {cfg.arch!r}")
    inputs = keras.Input((None, None, 2), name="structure_marker")
    b = cfg.base_filters
    if cfg.arch == "unet":
        def block(x: Any, filters: int, name: str) -> Any:
            for i in (1, 2):
                x = layers.Conv2D(filters, 3, padding="same", activation="relu",
                                  name=f"{name}_conv{i}")(x)
            return x

        c1 = block(inputs, b, "down1")
        c2 = block(layers.MaxPooling2D(name="pool1")(c1), 2 * b, "down2")
        c3 = block(layers.MaxPooling2D(name="pool2")(c2), 4 * b, "bottom")
        u2 = layers.Concatenate(name="skip2")([layers.UpSampling2D(name="up2")(c3), c2])
        c4 = block(u2, 2 * b, "up2")
        u1 = layers.Concatenate(name="skip1")([layers.UpSampling2D(name="up1")(c4), c1])
        c5 = block(u1, b, "up1")
        outputs = layers.Conv2D(1, 1, activation="sigmoid", name="event_map")(c5)
        return keras.Model(inputs, outputs, name="rt_eda_demo_unet")
    d = cfg.downsample
    x = layers.Conv2D(b, d, strides=d, padding="valid", activation="relu",
                      name=f"down{d}")(inputs)
    conv = layers.SeparableConv2D if cfg.separable else layers.Conv2D
    for i, rate in enumerate(cfg.dilations, 1):
        x = conv(b, 3, padding="same", dilation_rate=rate, activation="relu",
                 name=f"conv{i}_d{rate}")(x)
    x = layers.Conv2D(1, 1, activation="sigmoid", name="event_map_low")(x)
    outputs = layers.UpSampling2D(d, interpolation="bilinear", name="event_map")(x)
    return keras.Model(inputs, outputs, name="rt_eda_demo_lowres")


def _source(seed: int, size: int, event_every_s: float) -> SyntheticSource:
    from rt_eda.sources.synthetic import SyntheticSettings, SyntheticSource

    return SyntheticSource(  # create: --image-size is checked as camera.synthetic.height
        SyntheticSettings.create(height=size, width=size, seed=seed, event_every_s=event_every_s)
    )


def _marker_time(source: SyntheticSource, t_s: float) -> float:
    """When the first marker frame of the stack at ``t_s`` is exposed (frame order c-major)."""
    s = source.settings
    return t_s + s.z_slices * s.exposure_s


def _target(source: SyntheticSource, t_marker: float) -> np.ndarray:
    gt = source.ground_truth(t_marker)
    mask = source.event_mask(t_marker)
    if gt < EVENT_MIN_INTENSITY:
        return np.zeros_like(mask)
    return (mask >= 0.5 * gt).astype(np.float32)


def make_training_data(
    cfg: TrainConfig, worker: KerasRescaleWorker
) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Crops ``(N, crop, crop, 2)`` of preprocessed frames and targets ``(N, crop, crop, 1)``."""
    rng = np.random.default_rng(cfg.seed)
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    counts = {"frames": 0, "event_frames": 0, "crops": 0, "positive_crops": 0}
    c = cfg.crop
    for seed in cfg.train_seeds:
        source = _source(seed, cfg.image_size, cfg.event_every_s)
        stack = np.empty(source.spec.shape, source.spec.np_dtype)
        horizon = cfg.frames_per_seed * 5.0
        events = [e for e in source.events if e.end_s < horizon]
        n_edge = round(cfg.edge_fraction * cfg.frames_per_seed) if events else 0
        times = list(rng.uniform(0.0, horizon, cfg.frames_per_seed - n_edge))
        for _ in range(n_edge):  # near the 0.2 threshold: weak foci that must not count
            e = events[int(rng.integers(len(events)))]
            u = rng.uniform(0.0, 0.15)
            times.append(e.start_s + (u if rng.integers(2) else 1.0 - u) * e.duration_s)
        for t in np.sort(times):
            source.render_stack(float(t), stack)
            pixels = worker.prepare_images(stack)["pixels"][0]  # (H, W, 2)
            target = _target(source, _marker_time(source, float(t)))
            h, w = target.shape
            counts["frames"] += 1
            counts["event_frames"] += int(target.any())
            for k in range(cfg.crops_per_frame):
                if k == 0 and target.any():
                    cy, cx = np.unravel_index(int(np.argmax(target)), target.shape)
                    y0 = int(np.clip(cy - rng.integers(8, c - 8), 0, h - c))
                    x0 = int(np.clip(cx - rng.integers(8, c - 8), 0, w - c))
                else:
                    y0 = int(rng.integers(0, h - c + 1))
                    x0 = int(rng.integers(0, w - c + 1))
                rot = int(rng.integers(4))
                flip = bool(rng.integers(2))
                x = np.rot90(pixels[y0 : y0 + c, x0 : x0 + c], rot)
                y = np.rot90(target[y0 : y0 + c, x0 : x0 + c], rot)
                if flip:
                    x, y = x[:, ::-1], y[:, ::-1]
                xs.append(np.ascontiguousarray(x))
                ys.append(np.ascontiguousarray(y)[..., np.newaxis])
                counts["crops"] += 1
                counts["positive_crops"] += int(y.any())
        log.info("training data: seed %d done (%d crops so far)", seed, counts["crops"])
    return np.stack(xs), np.stack(ys), counts


def _weighted_bce(pos_weight: float) -> Any:
    import keras
    from keras import ops

    def loss(y_true: Any, y_pred: Any) -> Any:
        bce = keras.losses.binary_crossentropy(y_true, y_pred)  # mean over the channel axis
        weight = 1.0 + (pos_weight - 1.0) * ops.squeeze(y_true, -1)
        return ops.mean(bce * weight)

    return loss


def train(cfg: TrainConfig) -> tuple[keras.Model, dict[str, Any]]:
    """Build the data, train the demo model; return it and its training record."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(cfg.seed)
    tf.config.experimental.enable_op_determinism()
    worker = KerasRescaleWorker(WorkerSettings())
    t0 = time.perf_counter()
    x, y, counts = make_training_data(cfg, worker)
    t_data = time.perf_counter() - t0
    model = build_demo_model(cfg)
    model.compile(
        optimizer=keras.optimizers.Adam(cfg.learning_rate), loss=_weighted_bce(cfg.pos_weight)
    )
    t1 = time.perf_counter()
    history = model.fit(
        x, y, batch_size=cfg.batch_size, epochs=cfg.epochs, shuffle=True, verbose=0,
        callbacks=[_epoch_logger()],
    )
    t_train = time.perf_counter() - t1
    losses = [round(float(v), 5) for v in history.history["loss"]]
    record = {
        "data": {**counts, "time_s": round(t_data, 1)},
        "epochs": cfg.epochs,
        "loss_per_epoch": losses,
        "final_loss": losses[-1],
        "time_s": round(t_train, 1),
        "parameters": int(model.count_params()),
    }
    # an uncompiled model sharing the trained weights: the file carries no training config
    inference = keras.Model(model.inputs, model.outputs, name=model.name)
    return inference, record


def _epoch_logger() -> Any:
    """A Keras callback that logs each epoch's loss."""
    import keras

    class EpochLog(keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            log.info("epoch %d: loss %.4f", epoch + 1, (logs or {}).get("loss", math.nan))

    return EpochLog()


def evaluate(model_path: Path, cfg: TrainConfig) -> dict[str, Any]:
    """Per-frame detection quality of a saved model on held-out synthetic sources.

    Runs the real :class:`~rt_eda.workers.DemoModelWorker` (rescale
    preprocessing, the saved file) at full size on ``eval_frames_per_seed`` timepoints,
    ``eval_step_s`` apart, of each held-out seed with the default event schedule.
    """
    decisions: list[float] = []
    truths: list[bool] = []
    intensities: list[float] = []
    worker: DemoModelWorker | None = None
    for seed in cfg.eval_seeds:
        source = _source(seed, cfg.image_size, 8.0)
        if worker is None:
            worker = DemoModelWorker(WorkerSettings(model=str(model_path)))
            worker.setup(source.spec)
            worker.warm_up()
        stack = np.empty(source.spec.shape, source.spec.np_dtype)
        for i in range(cfg.eval_frames_per_seed):
            t = i * cfg.eval_step_s
            source.render_stack(t, stack)
            decisions.append(worker.analyse(stack).decision)
            t_marker = _marker_time(source, t)
            truths.append(source.has_event(t_marker, EVENT_MIN_INTENSITY))
            intensities.append(source.ground_truth(t_marker))
    d = np.asarray(decisions)
    truth = np.asarray(truths)
    result: dict[str, Any] = {
        "seeds": list(cfg.eval_seeds),
        "frames": len(d),
        "event_frames": int(truth.sum()),
        "truth": f"has_event(t_marker, min_intensity={EVENT_MIN_INTENSITY})",
        "decision": "max of the output map, 512x512, DemoModelWorker preprocessing",
    }
    for name, thr in (("upper_0.48", UPPER_THRESHOLD), ("lower_0.3", LOWER_THRESHOLD)):
        result[name] = detection_scores(d, truth, thr)
    weak = (np.asarray(intensities) > 0) & ~truth
    result["weak_event_frames"] = int(weak.sum())
    result["false_positives_on_weak_events"] = int(np.sum((d > UPPER_THRESHOLD) & weak))
    result["decision_median_no_event"] = round(float(np.median(d[~truth])), 4)
    if truth.any():
        result["decision_median_event"] = round(float(np.median(d[truth])), 4)
    return result


def detection_scores(decisions: np.ndarray, truth: np.ndarray, threshold: float) -> dict[str, Any]:
    """Precision, recall, F1 of ``decisions > threshold`` against boolean ``truth``."""
    detected = decisions > threshold
    tp = int(np.sum(detected & truth))
    fp = int(np.sum(detected & ~truth))
    fn = int(np.sum(~detected & truth))
    tn = int(np.sum(~detected & ~truth))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "threshold": threshold, "tp": tp, "fp": fp, "fn": fn, "tn": tn,
        "precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
    }


def time_inference(model_path: Path, repeats: int = 30) -> dict[str, Any]:
    """Median and p90 milliseconds of one batch-1 forward pass per inference mode.

    At 512 x 512 (the run's size) and 64 x 64 (where the fixed per-call overhead shows);
    the modes are interleaved so that load from other processes hits them alike.
    """
    from rt_eda.shm import StackSpec

    modes = [m for m in ("predict_on_batch", "call") if m in INFERENCE_MODES]
    out: dict[str, Any] = {"repeats": repeats, "batch": 1, "channels": 2}
    rng = np.random.default_rng(0)
    for size in (512, 64):
        spec = StackSpec(2, 1, size, size, "float32")
        x = rng.random((1, size, size, 2), dtype=np.float32)
        workers = {}
        for mode in modes:
            w = KerasWorker(WorkerSettings(model=str(model_path), options=(("inference", mode),)))
            w.setup(spec)
            for _ in range(3):
                w.run_model({"pixels": x})
            workers[mode] = w
        samples: dict[str, list[float]] = {mode: [] for mode in modes}
        for _ in range(repeats):
            for mode, w in workers.items():
                t0 = time.perf_counter()
                w.run_model({"pixels": x})
                samples[mode].append(1e3 * (time.perf_counter() - t0))
        out[f"{size}x{size}"] = {
            mode: {"p50": round(float(np.median(ms)), 2),
                   "p90": round(float(np.percentile(ms, 90)), 2)}
            for mode, ms in samples.items()
        }
    return out


def describe(cfg: TrainConfig) -> str:
    """One line naming the architecture of ``cfg`` (the ``description`` of the record)."""
    io = ("input (None, None, 2) = structure + marker after KerasRescaleWorker preprocessing; "
          "output (None, None, 1) sigmoid event map")
    if cfg.arch == "unet":
        return f"U-Net, 2 poolings, {cfg.base_filters} filters at full resolution; {io}"
    kind = "depthwise-separable " if cfg.separable else ""
    return (f"low-resolution network: {cfg.downsample}x{cfg.downsample} convolution of stride "
            f"{cfg.downsample} to {cfg.base_filters} channels, {len(cfg.dilations)} {kind}3x3 "
            f"convolutions (dilations {list(cfg.dilations)}) at 1/{cfg.downsample} resolution, "
            f"1x1 sigmoid, bilinear upsampling x{cfg.downsample} to the input's size; {io}")


def flops_record(model: keras.Model, size: int) -> dict[str, Any]:
    """FLOPs of a ``(1, size, size, 2)`` forward pass (:func:`~rt_eda.workers.count_flops`)."""
    counted = count_flops(model, (1, size, size, 2))
    return {"input_shape": list(counted.input_shape), "flops": counted.flops,
            "macs": counted.macs, "convention": "FLOPs = 2 x multiply-accumulates of the "
            "convolutions; activations, pooling, resampling and concatenation not counted",
            "not_counted": list(counted.not_counted),
            "layers": {r.name: r.flops for r in counted.layers}}


def _parse(argv: Sequence[str] | None) -> tuple[TrainConfig, Path, bool]:
    d = TrainConfig()
    p = argparse.ArgumentParser(
        prog="rt-eda train-demo-model",
        description="Train the demo network on synthetic data, evaluate it, save it with its "
        "training record (demo.json beside the model).",
    )
    p.add_argument("--output", type=Path, default=demo_model_path(),
                   help="where to save the .keras file (default: the bundled demo model)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--frames-per-seed", type=int, default=d.frames_per_seed)
    p.add_argument("--train-seeds", type=int, nargs="+", default=list(d.train_seeds))
    p.add_argument("--crop", type=int, default=d.crop)
    p.add_argument("--image-size", type=int, default=d.image_size)
    p.add_argument("--base-filters", type=int, default=d.base_filters,
                   help="unet: channels of the first level (demo_v1: 8); lowres: channels of "
                   "every layer (default %(default)s)")
    p.add_argument("--eval-seeds", type=int, nargs="*", default=list(d.eval_seeds))
    p.add_argument("--eval-frames-per-seed", type=int, default=d.eval_frames_per_seed)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--arch", choices=ARCHS, default=d.arch,
                   help="network: 'lowres' (the bundled model: strided downsampling, dilated "
                   "convolutions at low resolution, bilinear upsampling) or 'unet' (demo_v1: a "
                   "2-level U-Net at full resolution); default %(default)s")
    p.add_argument("--downsample", type=int, choices=(1, 2, 4), default=d.downsample,
                   help="lowres: the early stride and the final upsampling (default %(default)s)")
    p.add_argument("--dilations", type=int, nargs="+", default=list(d.dilations),
                   help="lowres: one 3x3 convolution per entry, at that dilation rate "
                   "(default %(default)s)")
    p.add_argument("--separable", action="store_true",
                   help="lowres: depthwise-separable 3x3 convolutions")
    p.add_argument("--learning-rate", type=float, default=d.learning_rate)
    p.add_argument("--no-timing", action="store_true", help="skip the inference timing")
    a = p.parse_args(argv)
    if a.crop % 4 or a.crop < 16 or a.crop > a.image_size or a.image_size % 4:
        raise ConfigError(
            f"--crop ({a.crop}) and --image-size ({a.image_size}) must be multiples of 4 with "
            "16 <= crop <= image size"
        )
    for key in ("epochs", "frames_per_seed", "base_filters", "eval_frames_per_seed"):
        if getattr(a, key) < 1:
            raise ConfigError(f"--{key.replace('_', '-')} must be >= 1, got {getattr(a, key)}")
    if not all(1 <= r <= 64 for r in a.dilations):
        raise ConfigError(f"--dilations must be rates from 1 to 64, got {a.dilations}")
    if not (a.learning_rate > 0 and math.isfinite(a.learning_rate)):
        raise ConfigError(f"--learning-rate must be a number > 0, got {a.learning_rate}")
    cfg = TrainConfig(
        seed=a.seed, train_seeds=tuple(a.train_seeds), frames_per_seed=a.frames_per_seed,
        crop=a.crop, image_size=a.image_size, base_filters=a.base_filters, epochs=a.epochs,
        eval_seeds=tuple(a.eval_seeds), eval_frames_per_seed=a.eval_frames_per_seed,
        threads=a.threads, arch=a.arch, downsample=a.downsample, dilations=tuple(a.dilations),
        separable=bool(a.separable), learning_rate=a.learning_rate,
    )
    return cfg, a.output, bool(a.no_timing)


def main(argv: Sequence[str] | None = None) -> int:
    """``rt-eda train-demo-model [options]``: train, save, evaluate, time; returns 0.

    Writes ``<output>`` (the ``.keras`` file) and ``<output>.json`` beside it (``demo.json``
    for ``demo.keras``), the training record with the measured quality.
    """
    cfg, output, no_timing = _parse(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    configure_threads(cfg.threads)
    import keras
    import tensorflow as tf

    model, record = train(cfg)
    output.parent.mkdir(parents=True, exist_ok=True)
    model.save(output)
    log.info("saved %s (%d bytes)", output, output.stat().st_size)
    quality = evaluate(output, cfg) if cfg.eval_seeds else {}
    timing = {} if no_timing else time_inference(output)
    doc = {
        "model": output.name,
        "description": describe(cfg),
        "input_shape": [None, None, None, 2],
        "flops_per_stack": flops_record(model, cfg.image_size),
        "file_bytes": output.stat().st_size,
        "command": " ".join(["rt-eda train-demo-model", *(sys.argv[1:] if argv is None else argv)]),
        "config": asdict(cfg),
        "training": record,
        "evaluation": quality,
        "inference_ms": timing,
        "versions": {"keras": keras.__version__, "tensorflow": tf.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, "
        f"{cfg.threads} TF intra-op threads",
    }
    json_path = output.with_suffix(".json")
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    log.info("training record: %s", json_path)
    return 0
