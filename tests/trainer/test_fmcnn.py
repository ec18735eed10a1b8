"""FMCNN: a tiny real model on real RRUFF spectra; deconvnet parity and peak science; export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from edge.bundle import load_bundle, load_deconv_weights, save_deconv_weights  # noqa: E402
from edge.classifier import Classifier  # noqa: E402
from edge.deconv import attribution, top_peaks  # noqa: E402
from trainer.deconv_ref import extract_weights, reference_attribution  # noqa: E402
from trainer.fmcnn import ArchConfig, augment, make_fmcnn  # noqa: E402

#: Quartz and calcite: the strongest band, which must be the top attribution peak.
TOP_BAND = {"Quartz": 464.0, "Calcite": 1086.0}
#: Other minerals: their well-known main bands (cm-1); one must be among the top-3 peaks.
#: (Forsterite's 824/856 doublet and diopside's 667/1012 pair trade places with orientation.)
MAIN_BANDS = {"Gypsum": (1008.0,), "Forsterite": (824.0, 856.0), "Diopside": (667.0, 1012.0)}


#: One calibration candidate keeps the export tests fast (the search itself is tested once).
ONE = ((200, 0, False),)


def test_calibration_search_records_its_candidates(tiny_model: tuple[Any, Any]) -> None:
    from trainer.export import choose_calibration

    model, ds = tiny_model
    tflite, info = choose_calibration(model, ds, candidates=((50, 0, False), (100, 1, True)), activations="int16")
    assert tflite[4:8] == b"TFL3" and len(info["candidates"]) == 2
    assert info["tuning_agreement"] == max(c["tuning_agreement"] for c in info["candidates"])


def test_dynamic_range_export_needs_no_calibration_and_runs_float_activations(tiny_model: tuple[Any, Any]) -> None:
    from edge.classifier import TFLiteNet
    from edge.errors import BundleError
    from trainer.export import _head_of, choose_calibration

    model, ds = tiny_model
    tflite, info = choose_calibration(model, ds, activations="float32")
    assert info["candidates"] == [] and info["tuning_agreement"] >= 0.99
    head = _head_of(model, "float32")
    assert head.bottleneck_w is not None and head.input_width == model.get_layer("flatten").output.shape[-1]
    net = TFLiteNet(model_content=tflite, n_logits=len(ds.labels), head=head)
    assert net.input_quantization["dtype"] == "float32"
    emb_q = net.output_quantization["embedding"]
    assert emb_q["dtype"] == "float32" and emb_q["width"] == model.get_layer("bottleneck").units
    # The model ends at the features; bottleneck and logits on the host give the float answers.
    ref = np.asarray(model.predict(ds.X[:40, :, None], verbose=0)).argmax(1)
    got = np.array([int(np.argmax(net.run(x)[0])) for x in ds.X[:40]])
    assert (got == ref).mean() >= 0.95
    # A 16x8-style head (no bottleneck) does not fit this model: refused with the widths.
    with pytest.raises(BundleError, match="needs one embedding output of width"):
        TFLiteNet(model_content=tflite, n_logits=len(ds.labels), head=_head_of(model))


def test_channel_equalisation_is_exact_in_float(tiny_model: tuple[Any, Any]) -> None:
    from trainer.fmcnn import equalize_channels, fold_batchnorm

    model, ds = tiny_model
    ref = model.predict(ds.X[:32, :, None], verbose=0)
    eq = equalize_channels(fold_batchnorm(model), ds.X[:64])
    np.testing.assert_allclose(eq.predict(ds.X[:32, :, None], verbose=0)[0], ref, atol=1e-4)


def test_architecture_follows_the_paper_and_is_small() -> None:
    model = make_fmcnn(1360, 1203)
    names = [layer.name for layer in model.layers]
    order = ["conv0", "lrelu0", "bn0", "fire_squeeze", "fire_e1", "fire_e3", "fire_concat", "pool", "flatten"]
    assert [n for n in names if n in order] == order
    assert model.get_layer("lrelu0").negative_slope == pytest.approx(0.2)
    pool = model.get_layer("pool")
    assert pool.pool_size == pool.strides  # non-overlapping
    # int8 weights ~ 1 byte per parameter: well under 500 KB even with 1,203 classes
    assert model.count_params() < 400_000


def test_augment_keeps_shape_and_normalisation() -> None:
    rng = np.random.default_rng(0)
    X = np.abs(rng.normal(size=(16, 1360))).astype(np.float32)
    X /= X.max(axis=1, keepdims=True)
    A = augment(X, rng)
    assert A.shape == X.shape and A.dtype == np.float32
    np.testing.assert_allclose(A.max(axis=1), 1.0, rtol=1e-5)


def test_tiny_model_learns(tiny_model: tuple[Any, Any]) -> None:
    model, ds = tiny_model
    pred = model.predict(ds.X[..., None], verbose=0).argmax(1)
    assert (pred == ds.y).mean() > 0.9


def test_numpy_deconv_matches_tensorflow_reference(tiny_model: tuple[Any, Any], tmp_path: Path) -> None:
    model, ds = tiny_model
    w = extract_weights(model)
    save_deconv_weights(w, tmp_path / "d.npz")
    loaded = load_deconv_weights(tmp_path / "d.npz")  # float16 dense weights, as shipped
    rng = np.random.default_rng(1)
    for i in rng.choice(len(ds.y), size=12, replace=False):
        ref = reference_attribution(model, ds.X[i], int(ds.y[i]))
        for weights in (w, loaded):
            ours = attribution(ds.X[i], weights, int(ds.y[i]))
            assert np.corrcoef(ours, ref)[0, 1] >= 0.999


def _peaks_of(tiny_model: tuple[Any, Any], mineral: str) -> list[list[float]]:
    model, ds = tiny_model
    w = extract_weights(model)
    grid = ds.spec.grid_cm1()
    c = ds.labels.index(mineral)
    return [
        [p.shift_cm1 for p in top_peaks(attribution(ds.X[i], w, c), ds.X[i], grid, k=3)]
        for i in np.flatnonzero(ds.y == c)
    ]


@pytest.mark.parametrize("mineral", sorted(TOP_BAND))
def test_top_attribution_peak_is_the_strongest_band(tiny_model: tuple[Any, Any], mineral: str) -> None:
    per_spectrum = _peaks_of(tiny_model, mineral)
    hits = sum(abs(peaks[0] - TOP_BAND[mineral]) <= 10 for peaks in per_spectrum)
    assert hits >= len(per_spectrum) - 1, f"{mineral}: {hits}/{len(per_spectrum)}: {per_spectrum}"


@pytest.mark.parametrize("mineral", sorted(MAIN_BANDS))
def test_a_main_band_is_among_the_top_peaks(tiny_model: tuple[Any, Any], mineral: str) -> None:
    per_spectrum = _peaks_of(tiny_model, mineral)
    hits = sum(any(abs(p - b) <= 10 for p in peaks for b in MAIN_BANDS[mineral]) for peaks in per_spectrum)
    assert hits >= 0.9 * len(per_spectrum), f"{mineral}: {hits}/{len(per_spectrum)}: {per_spectrum}"


def test_export_bundle_parity_and_edge_load(tiny_model: tuple[Any, Any], tmp_path: Path) -> None:
    from trainer.export import export_bundle

    model, ds = tiny_model
    out = tmp_path / "bundle"
    manifest = export_bundle(
        model, ds, ds, out, name="tiny", training_info={"n": len(ds.y)}, calibration_candidates=ONE
    )
    assert manifest["parity"]["top1_agreement"] >= 0.99
    # default export: dynamic range (float32 input), model.tflite ends at the features;
    # bottleneck (int8 weights) and logits computed on the host in float32
    assert manifest["quantization"] == {"weights": "int8", "activations": "float32"}
    assert manifest["input"]["dtype"] == "float32" and manifest["outputs"]["embedding"]["dtype"] == "float32"
    assert manifest["output"]["dtype"] == "float32" and manifest["head"]["shape"] == [96, len(ds.labels)]
    assert manifest["head"]["bottleneck"]["shape"] == [model.get_layer("flatten").output.shape[-1], 96]
    b = load_bundle(out)
    assert b.labels == ds.labels and b.sha256 == manifest["files"]["model.tflite"]
    clf = Classifier(b)
    acc = np.mean([clf.classify(x).class_index == y for x, y in zip(ds.X, ds.y, strict=True)])
    assert acc > 0.9
    # unknown threshold keeps ~95 % of the known held-out spectra
    kept = np.mean([not clf.classify(x).unknown for x in ds.X])
    assert kept >= 0.9
    assert (out / "model.tflite").stat().st_size < 500_000


def test_export_refuses_when_parity_is_below_the_bar(tiny_model: tuple[Any, Any], tmp_path: Path) -> None:
    from trainer.errors import ExportError
    from trainer.export import export_bundle

    model, ds = tiny_model
    with pytest.raises(ExportError, match="agrees with the float model"):
        export_bundle(
            model, ds, ds, tmp_path / "b", name="t", training_info={}, parity_min=1.01, calibration_candidates=ONE
        )
    assert not (tmp_path / "b").exists()


def test_evaluate_reports_what_the_edge_sees(tiny_model: tuple[Any, Any], tmp_path: Path, rruff_path: Path) -> None:
    from trainer.evaluate import evaluate_bundle
    from trainer.export import export_bundle

    model, ds = tiny_model
    export_bundle(model, ds, ds, tmp_path / "b", name="t", training_info={}, calibration_candidates=ONE)
    # a folder with two known minerals and one the bundle does not know
    from trainer.rruff import iter_files, parse_filename

    folder = tmp_path / "data"
    folder.mkdir()
    wanted = {"Quartz": 2, "Calcite": 2, "Hematite": 1}
    for name, raw in iter_files(rruff_path):
        info = parse_filename(name)
        if info and wanted.get(info.mineral, 0) > 0 and info.data_type == "Processed":
            wanted[info.mineral] -= 1
            (folder / Path(name).name).write_bytes(raw)
        if not any(wanted.values()):
            break
    report = evaluate_bundle(tmp_path / "b", folder, tmp_path / "eval.json")
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["n"] == 4 and saved["n_unknown_label"] == 1
    for key in ("accuracy", "top3", "macro_f1", "per_class"):
        assert key in saved
    assert report["accuracy"] >= 0.75
    assert (tmp_path / "eval.confusion.png").exists()


def test_arch_config_is_recorded() -> None:
    from trainer.fmcnn import TrainConfig

    d = TrainConfig(arch=ArchConfig(bottleneck=32)).to_dict()
    assert d["arch"]["bottleneck"] == 32 and d["seed"] == 0


def test_specimen_validation_holds_out_whole_specimens_and_keeps_every_class() -> None:
    from trainer.fmcnn import TrainConfig, validation_rows

    rng = np.random.default_rng(0)
    # 300 classes with 1-5 specimens of 1-3 spectra each, like RRUFF.
    y, groups = [], []
    for c in range(300):
        for s in range(int(rng.integers(1, 6))):
            for _ in range(int(rng.integers(1, 4))):
                y.append(c)
                groups.append(f"R{c:03d}{s}")
    y_arr, g_arr = np.array(y, dtype=np.int64), np.array(groups)
    cfg = TrainConfig(val_split="specimen", val_fraction=0.2)
    is_val = validation_rows(y_arr, cfg, np.random.default_rng(1), g_arr)
    assert not set(g_arr[is_val]) & set(g_arr[~is_val])  # no specimen on both sides
    assert set(y_arr[~is_val]) == set(y_arr)  # every class keeps a training specimen
    assert 0.1 < is_val.mean() < 0.3
    spectrum = validation_rows(y_arr, TrainConfig(val_split="spectrum", val_fraction=0.2), np.random.default_rng(1))
    assert set(g_arr[spectrum]) & set(g_arr[~spectrum])  # the old split shares specimens
    from trainer.errors import TrainerError

    with pytest.raises(TrainerError, match="needs the specimen"):
        validation_rows(y_arr, cfg, np.random.default_rng(1))


def test_exported_bundle_has_logits_embedding_and_host_softmax(tiny_model: tuple[Any, Any], tmp_path: Path) -> None:
    import numpy as np

    from edge.bundle import load_bundle
    from edge.classifier import Classifier
    from trainer.export import export_bundle

    model, ds = tiny_model
    idx = np.arange(len(ds.y))
    export_bundle(
        model,
        ds.subset(idx[::2]),
        ds.subset(idx[1::2]),
        tmp_path / "b",
        name="t",
        training_info={},
        parity_min=0.0,
        calibration_candidates=((200, 0, False),),
    )
    b = load_bundle(tmp_path / "b")
    t = b.manifest["temperature"]["value"]
    assert 0.05 <= t <= 20 and b.manifest["outputs"]["embedding"]["width"] == 96
    clf = Classifier(b)
    pred = clf.classify(ds.X[1])
    z = pred.logits.astype(np.float64) / t
    ref = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    assert np.allclose(pred.probabilities, ref, atol=1e-6)
    assert pred.embedding is not None and abs(np.linalg.norm(pred.embedding) - 1) < 0.05
    assert pred.class_index == int(np.argmax(pred.logits))
    # The host head is exactly the trained logits layer applied to the int model's embedding.
    raw = clf.net._interp  # the one output is the flattened features; the bottleneck runs on the host
    w, bias = model.get_layer("logits").get_weights()
    e = clf.net.run(ds.X[1])[1]
    assert e is not None and e.shape == (w.shape[0],)
    assert raw.get_output_details()[0]["shape"][-1] == model.get_layer("flatten").output.shape[-1]
    keras_logits = model.predict(ds.X[1:2, :, None], verbose=0)[0]
    assert np.corrcoef(pred.logits, keras_logits)[0, 1] > 0.99
    # A tampered head is refused by the manifest check, a foreign one by its shape.
    from edge.classifier import save_head
    from edge.errors import BundleError

    save_head(w[:, :-1], bias[:-1], tmp_path / "b" / "head.npz")
    with pytest.raises(BundleError, match="SHA-256 mismatch"):
        load_bundle(tmp_path / "b")
    with pytest.raises(BundleError, match="do not fit"):
        Classifier(load_bundle(tmp_path / "b", verify=False))


def test_calibration_rows_are_whole_specimens_and_leave_one_for_training() -> None:
    from trainer.fmcnn import calibration_rows

    y = np.repeat(np.arange(30), 4)
    groups = np.array([f"R{i // 2:04d}" for i in range(y.size)])  # two specimens per mineral
    cal = calibration_rows(y, groups, 0.5, seed=0)
    assert 0 < cal.sum() < y.size
    for c in range(30):
        rows = y == c
        assert not cal[rows].all()  # a mineral keeps a specimen for training
    kept, taken = set(groups[~cal]), set(groups[cal])
    assert not kept & taken  # whole specimens
    assert np.array_equal(cal, calibration_rows(y, groups, 0.5, seed=0))
    assert not calibration_rows(y, groups, 0.0, seed=0).any()


def test_export_fits_temperature_on_the_calibration_set(tiny_model: tuple[Any, Any], tmp_path: Path) -> None:
    from trainer.export import export_bundle

    model, ds = tiny_model
    cal = ds.subset(np.arange(0, len(ds.y), 3))
    manifest = export_bundle(
        model, ds, ds, tmp_path / "b", name="t", training_info={}, calibration_set=cal, calibration_candidates=ONE
    )
    t = manifest["temperature"]
    assert t["criterion"] == "top_label_brier"
    assert t["fitted_on"].startswith(f"{cal.y.size} calibration")
    assert manifest["unknown"]["calibrated_on"].startswith(f"{cal.y.size} calibration")
    assert manifest["library"]["fit"]["n_heldout"] == cal.y.size
    fused = manifest["fusion"]["heldout"]
    assert fused["n"] == ds.y.size and 0.0 <= fused["ece"] <= 1.0
