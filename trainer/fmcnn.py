"""FMCNN (Guo et al., Spectroscopy 35(11), 2020) in Keras, plus its training loop.

Architecture (the paper gives the layer order, not the widths; ours are chosen for size):

    input (1360, 1)
    Conv1D(16, k=9, same)  -> LeakyReLU(0.2) -> BatchNorm          "conv0", "bn0"
    Fire: squeeze Conv1D(8, k=1) -> LeakyReLU                       "fire_squeeze"
          expand  Conv1D(16, k=1) || Conv1D(16, k=3) -> LeakyReLU   "fire_e1", "fire_e3"
          concatenate -> (1360, 32)
    MaxPool1D(16, non-overlapping)  -> (85, 32)                     "pool"
    Flatten -> Dense(96, linear) -> Dropout -> Dense(n, linear)     "bottleneck", "logits"
    (inference twin only) second output: the bottleneck vector (embedding, normalised on the host)

The model outputs logits, never softmax: an int8 softmax has a fixed 1/256 step, so with
1,203 classes the top of the distribution ties and top-1 flips (tensorflow#31229). The edge
computes softmax(logits / T) on the host with a temperature T fitted at export.

The two Dense layers have no nonlinearity between them: together they are one
Flatten->Dense->softmax layer whose 2720 x n weight matrix is factorised to rank 96. That
keeps the paper's structure while cutting the int8 file from ~3.3 MB (1,203 classes) to a
few hundred KB, and the deconvnet can use the product W_bottleneck @ W_logits exactly.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from numpy.typing import NDArray  # noqa: E402

from trainer.errors import TrainerError  # noqa: E402


@dataclass(frozen=True)
class ArchConfig:
    conv_filters: int = 16
    conv_kernel: int = 9
    squeeze: int = 8
    expand: int = 16  # per branch; fire output has 2 * expand channels
    pool: int = 16
    bottleneck: int = 96
    dropout: float = 0.5
    l2: float = 1e-4
    leaky_alpha: float = 0.2
    #: Gaussian noise (training only) on the normalised conv features and the fire output, meant
    #: to make decisions robust to int8 rounding. Off by default: on the paper selection, 0.03
    #: lowered held-out accuracy (0.825 -> 0.805) without raising int8 parity (99.0 -> 97.6 %).
    activation_noise: float = 0.0
    #: 1: the paper's single fire module. 2: a second fire module (twice as wide) after a first
    #: max-pool of `pool_first`; the final pool then acts on the coarser map. Max-pooling twice
    #: makes the features tolerant of band displacements of a few grid points per stage.
    fires: int = 1
    pool_first: int = 4


@dataclass(frozen=True)
class TrainConfig:
    arch: ArchConfig = ArchConfig()
    epochs: int = 120
    batch_size: int = 32
    learning_rate: float = 1e-3
    patience: int = 20
    val_fraction: float = 0.1
    # "spectrum": random validation spectra; "specimen": whole specimens (RRUFF IDs), so early
    # stopping watches specimens the model has not seen, as on the instrument. Needs groups.
    #: Chosen on held-out specimens (bench/results/fmcnn_arch.md): "specimen" validation, and
    #: early stopping on its accuracy with patience 20.
    val_split: str = "specimen"
    label_smoothing: float = 0.0
    #: What early stopping watches on the validation rows: "val_loss", or "val_accuracy"
    #: (the loss of unseen specimens rises while their accuracy still climbs: over-confidence
    #: that the temperature fitted at export corrects afterwards).
    monitor: str = "val_accuracy"
    augment: bool = True
    #: Physics augmentation ranges (trainer.augment.AugmentConfig); None = its defaults.
    augment_config: Any = None
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_fmcnn(
    input_len: int = 1360, n_classes: int = 2, arch: ArchConfig | None = None, *, inference: bool = False
) -> Any:
    """The training model; `inference=True` builds the BN-folded twin used for int8 export."""
    import keras
    from keras import layers, regularizers

    a = arch or ArchConfig()
    reg = None if inference else regularizers.l2(a.l2)
    inp = keras.Input(shape=(input_len, 1), name="spectrum")
    x = layers.Conv1D(a.conv_filters, a.conv_kernel, padding="same", kernel_regularizer=reg, name="conv0")(inp)
    x = layers.LeakyReLU(negative_slope=a.leaky_alpha, name="lrelu0")(x)
    if not inference:
        x = layers.BatchNormalization(name="bn0")(x)
        if a.activation_noise > 0:
            x = layers.GaussianNoise(a.activation_noise, name="noise_bn0")(x)
    f = _fire(layers, x, "fire", a.squeeze, a.expand, reg, a.leaky_alpha)
    if not inference and a.activation_noise > 0:
        f = layers.GaussianNoise(a.activation_noise, name="noise_fire")(f)
    if a.fires == 2:
        f = layers.MaxPooling1D(pool_size=a.pool_first, strides=a.pool_first, padding="valid", name="pool_first")(f)
        f = _fire(layers, f, "fire2", 2 * a.squeeze, 2 * a.expand, reg, a.leaky_alpha)
    elif a.fires != 1:
        raise TrainerError(f"fires must be 1 or 2, got {a.fires}")
    p = layers.MaxPooling1D(pool_size=a.pool, strides=a.pool, padding="valid", name="pool")(f)
    z = layers.Flatten(name="flatten")(p)
    z = layers.Dense(a.bottleneck, kernel_regularizer=reg, name="bottleneck")(z)
    if not inference:
        z = layers.Dropout(a.dropout, name="dropout")(z)
    out = layers.Dense(n_classes, kernel_regularizer=reg, name="logits")(z)
    if inference:
        # The embedding for nearest-reference matching: the bottleneck vector, a second output
        # of the same model. The edge L2-normalises it on the host (a TFLite L2 norm is
        # SQUARE/SUM/RSQRT ops that 16x8 quantisation does not support).
        return keras.Model(inp, [out, z], name="fmcnn")
    return keras.Model(inp, out, name="fmcnn")


def _fire(layers: Any, x: Any, name: str, squeeze: int, expand: int, reg: Any, alpha: float) -> Any:
    """A fire module: 1x1 squeeze, then 1x1 || 3-wide expand, concatenated.

    Layer names: "<name>_squeeze|_e1|_e3|_concat"; activations "lrelu_<tag>squeeze|e1|e3" with
    tag "" for the first module (the names the shipped bundle and the deconvnet know) and "2_"
    for the second.
    """
    tag = "" if name == "fire" else name[len("fire") :] + "_"
    s = layers.Conv1D(squeeze, 1, padding="same", kernel_regularizer=reg, name=f"{name}_squeeze")(x)
    s = layers.LeakyReLU(negative_slope=alpha, name=f"lrelu_{tag}squeeze")(s)
    e1 = layers.Conv1D(expand, 1, padding="same", kernel_regularizer=reg, name=f"{name}_e1")(s)
    e1 = layers.LeakyReLU(negative_slope=alpha, name=f"lrelu_{tag}e1")(e1)
    e3 = layers.Conv1D(expand, 3, padding="same", kernel_regularizer=reg, name=f"{name}_e3")(s)
    e3 = layers.LeakyReLU(negative_slope=alpha, name=f"lrelu_{tag}e3")(e3)
    return layers.Concatenate(name=f"{name}_concat")([e1, e3])


def fire_names(model: Any) -> tuple[str, ...]:
    """The fire modules of a built FMCNN, input side first ("fire", then "fire2" if present)."""
    names = {layer.name for layer in model.layers}
    return tuple(n for n in ("fire", "fire2") if f"{n}_squeeze" in names)


def arch_of(model: Any) -> ArchConfig:
    """Recover the ArchConfig of a built FMCNN from its layers."""
    g = model.get_layer
    return ArchConfig(
        conv_filters=int(g("conv0").filters),
        conv_kernel=int(g("conv0").kernel_size[0]),
        squeeze=int(g("fire_squeeze").filters),
        expand=int(g("fire_e1").filters),
        pool=int(g("pool").pool_size[0]),
        bottleneck=int(g("bottleneck").units),
        leaky_alpha=float(g("lrelu0").negative_slope),
        fires=len(fire_names(model)),
        pool_first=int(g("pool_first").pool_size[0]) if len(fire_names(model)) == 2 else 4,
    )


def fold_batchnorm(model: Any) -> Any:
    """The same function without BatchNorm: BN folded into the 1x1 squeeze convolution.

    BN sits between LeakyReLU and the squeeze conv (the paper's order), so TFLite cannot fold
    it into a preceding conv and runs it as separate int8 MUL and ADD ops; their extra
    requantisation flipped ~1-2 % of top-1 decisions in our tests (below the 99 % parity bar).
    BN is per-channel affine and the squeeze kernel is 1x1 (no padding), so folding is exact:
    W'[0, i, o] = W[0, i, o] * a_i, b'_o = b_o + sum_i W[0, i, o] * c_i, with
    a = gamma / sqrt(var + eps), c = beta - mean * a.
    """
    inf = make_fmcnn(int(model.input.shape[1]), int(model.get_layer("logits").units), arch_of(model), inference=True)
    copied = ["conv0", "fire_e1", "fire_e3", "bottleneck", "logits"]
    if "fire2" in fire_names(model):
        copied += ["fire2_squeeze", "fire2_e1", "fire2_e3"]
    for name in copied:
        inf.get_layer(name).set_weights(model.get_layer(name).get_weights())
    bn = model.get_layer("bn0")
    gamma, beta, mean, var = bn.get_weights()
    a = gamma / np.sqrt(var + bn.epsilon)
    c = beta - mean * a
    w, b = model.get_layer("fire_squeeze").get_weights()
    inf.get_layer("fire_squeeze").set_weights([w * a[None, :, None], b + np.einsum("kio,i->o", w, c)])
    return inf


def equalize_channels(inference_model: Any, calibration: NDArray[np.float32]) -> Any:
    """Cross-layer equalisation (Nagel et al. 2019) of a BN-folded FMCNN, in place, exact in float.

    int8 activations are quantised per tensor, so a channel whose activations span 1/50 of the
    tensor's range keeps only ~5 of 256 levels. LeakyReLU and max-pooling are positively
    homogeneous (f(s*x) = s*f(x) for s > 0), so each channel of conv0, the squeeze and the
    expands can be scaled by s_c to the tensor's largest range, and the next layer's weights
    for that channel divided by s_c: same function, evenly used int8 ranges.
    """
    import keras

    g = inference_model.get_layer
    two = "fire2" in fire_names(inference_model)
    taps = [g("lrelu0").output, g("lrelu_squeeze").output, g("fire_concat").output]
    if two:
        taps += [g("lrelu_2_squeeze").output, g("fire2_concat").output]
    probe = keras.Model(inference_model.input, taps)
    ranges = [np.abs(t).max(axis=(0, 1)) for t in probe.predict(calibration[..., None], verbose=0)]

    def scales(r: NDArray[np.float32]) -> NDArray[np.float32]:
        r = np.maximum(r, 1e-6 * r.max())
        return (r.max() / r).astype(np.float32)

    s0, s1, s2 = (scales(r) for r in ranges[:3])
    k, b = g("conv0").get_weights()
    g("conv0").set_weights([k * s0, b * s0])
    k, b = g("fire_squeeze").get_weights()
    g("fire_squeeze").set_weights([k / s0[None, :, None] * s1, b * s1])
    e = int(g("fire_e1").filters)
    for name, part in (("fire_e1", s2[:e]), ("fire_e3", s2[e:])):
        k, b = g(name).get_weights()
        g(name).set_weights([k / s1[None, :, None] * part, b * part])
    if two:
        # Max-pooling between the modules commutes with a positive per-channel scale.
        s3, s4 = scales(ranges[3]), scales(ranges[4])
        k, b = g("fire2_squeeze").get_weights()
        g("fire2_squeeze").set_weights([k / s2[None, :, None] * s3, b * s3])
        e2 = int(g("fire2_e1").filters)
        for name, part in (("fire2_e1", s4[:e2]), ("fire2_e3", s4[e2:])):
            k, b = g(name).get_weights()
            g(name).set_weights([k / s3[None, :, None] * part, b * part])
        s2 = s4
    w, b = g("bottleneck").get_weights()
    # Flatten of (positions, channels) is row-major: row index = position * channels + channel.
    g("bottleneck").set_weights([w / np.tile(s2, w.shape[0] // s2.size)[:, None], b])
    return inference_model


def augment(X: NDArray[np.float32], rng: np.random.Generator, config: Any = None) -> NDArray[np.float32]:
    """Training augmentation (trainer.augment, instrument physics; ranges documented there)."""
    from trainer.augment import AugmentConfig
    from trainer.augment import augment as physics_augment

    return physics_augment(X, rng, config or AugmentConfig())


def _val_split(
    y: NDArray[np.int64], groups: NDArray[Any], fraction: float, rng: np.random.Generator
) -> NDArray[np.bool_]:
    """Validation rows: whole groups, a random fraction of each class's groups, never all of them.

    With every row its own group this is a per-spectrum split (the same random draws, so the
    shipped bundle's held-out set is reproduced exactly).
    """
    is_val = np.zeros(y.size, dtype=bool)
    if fraction <= 0:
        return is_val
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        members = np.unique(groups[rows])
        if members.size >= 2:
            take = rng.random(members.size) < fraction
            if take.all():
                take[rng.integers(members.size)] = False
            is_val[rows[np.isin(groups[rows], members[take])]] = True
    return is_val


#: Share of each mineral's specimens held out for calibration (a mineral keeps at least one
#: specimen for training): about 270 spectra of the paper selection, as many as early stopping.
CALIB_FRACTION = 0.1


def calibration_rows(y: NDArray[np.int64], groups: NDArray[Any], fraction: float, seed: int) -> NDArray[np.bool_]:
    """Whole specimens kept out of training and early stopping (`trainer export`'s calibration
    set): the same rule as the validation split, from its own random stream."""
    return _val_split(y, groups, fraction, np.random.default_rng([seed, 0xCA11B]))


def validation_rows(
    y: NDArray[np.int64], cfg: TrainConfig, rng: np.random.Generator, groups: NDArray[Any] | None = None
) -> NDArray[np.bool_]:
    """The early-stopping validation rows `train_fmcnn` holds out (also the export's held-out set)."""
    if cfg.val_split == "specimen":
        if groups is None:
            raise TrainerError("val_split='specimen' needs the specimen of every row (groups)")
        return _val_split(y, groups, cfg.val_fraction, rng)
    if cfg.val_split != "spectrum":
        raise TrainerError(f"--val-split must be 'spectrum' or 'specimen', got {cfg.val_split!r}")
    return _val_split(y, np.arange(y.size), cfg.val_fraction, rng)


def holdout_rows(
    y: NDArray[np.int64], groups: NDArray[Any], cfg: TrainConfig, calib_fraction: float
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """(held-out, calibration) masks over the whole dataset, as `trainer train` splits it:
    calibration specimens first, then, on the rest, the validation rows `train_fmcnn` holds
    out itself (so training on the rest reproduces the same held-out set)."""
    is_cal = calibration_rows(y, groups, calib_fraction, cfg.seed)
    rest = np.flatnonzero(~is_cal)
    is_val = np.zeros(y.size, dtype=bool)
    is_val[rest] = validation_rows(y[rest], cfg, np.random.default_rng(cfg.seed), groups[rest])
    return is_val, is_cal


def _batches(X: Any, Y: Any, cfg: TrainConfig, rng: np.random.Generator) -> Any:
    """A keras PyDataset that augments every batch afresh (a new perturbation each epoch)."""
    import keras

    class Augmented(keras.utils.PyDataset):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.order = rng.permutation(len(X))

        def __len__(self) -> int:
            return int(np.ceil(len(X) / cfg.batch_size))

        def __getitem__(self, i: int) -> tuple[Any, Any]:
            rows = self.order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            xb = augment(X[rows], rng, cfg.augment_config) if cfg.augment else X[rows]
            return xb[..., None], Y[rows]

        def on_epoch_end(self) -> None:
            self.order = rng.permutation(len(X))

    return Augmented()


def train_fmcnn(
    X: NDArray[np.float32],
    y: NDArray[np.int64],
    n_classes: int,
    cfg: TrainConfig | None = None,
    *,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    groups: NDArray[Any] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Train with Keras EarlyStopping (best weights restored) on a validation split."""
    import keras

    cfg = cfg or TrainConfig()
    keras.utils.set_random_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    is_val = validation_rows(y, cfg, rng, groups)
    Xtr, ytr, Xva, yva = X[~is_val], y[~is_val], X[is_val], y[is_val]
    model = make_fmcnn(X.shape[1], n_classes, cfg.arch)
    model.compile(
        optimizer=keras.optimizers.Adam(cfg.learning_rate, beta_1=0.9, beta_2=0.999, epsilon=1e-8),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=cfg.label_smoothing),
        metrics=["accuracy"],
    )
    Ytr = np.eye(n_classes, dtype=np.float32)[ytr]
    Yva = np.eye(n_classes, dtype=np.float32)[yva]
    if cfg.monitor not in ("val_loss", "val_accuracy"):
        raise TrainerError(f"monitor must be 'val_loss' or 'val_accuracy', got {cfg.monitor!r}")
    monitor = cfg.monitor if yva.size else "loss"
    mode = "max" if monitor == "val_accuracy" else "min"
    stop = keras.callbacks.EarlyStopping(
        monitor=monitor, mode=mode, patience=cfg.patience, min_delta=1e-4, restore_best_weights=True
    )
    callbacks: list[Any] = [stop]
    if on_epoch:
        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: on_epoch(e, dict(logs or {}))))
    t0 = time.perf_counter()
    h = model.fit(
        _batches(Xtr, Ytr, cfg, rng),
        validation_data=(Xva[..., None], Yva) if yva.size else None,
        epochs=cfg.epochs,
        verbose=0,
        callbacks=callbacks,
    )
    hist = h.history
    epochs = [{k: float(v[i]) for k, v in hist.items()} for i in range(len(hist["loss"]))]
    best = int(np.argmax(hist[monitor]) if mode == "max" else np.argmin(hist[monitor]))
    history: dict[str, Any] = {
        "epochs": epochs,
        "n_train": int(ytr.size),
        "n_val": int(yva.size),
        "best_epoch": best,
        "best_monitor": float(hist[monitor][best]),
        "train_s": time.perf_counter() - t0,
    }
    return model, history


def count_params(model: Any) -> int:
    return int(model.count_params())
