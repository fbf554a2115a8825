"""The ONNX export (ifan_jax.export): its export form equals the network's inference form, and the
exported graph run by onnxruntime reproduces the official outputs and our JAX forward.

The tiny official checkpoints (ch=8, N=3, both IAC variants) of tests/assets are exported at test
time; tests/assets/tiny_*_iac.npz hold the official code's outputs on their 64 x 96 input.
"""

import collections
import hashlib
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from official_reference import reference, reference_state_dict
from repo import ROOT

from ifan_jax import checkpoint
from ifan_jax.export import (
    METADATA_KEYS,
    export_estimator_bytes,
    export_onnx,
    export_onnx_bytes,
    read_metadata,
    source_sha256,
)
from ifan_jax.export.onnx import ExportError, check_tile, cpu_session
from ifan_jax.inference import Deblurrer
from ifan_jax.inference import defocus as defocus_lib
from ifan_jax.models import IFAN, REBLUR_KEY
from ifan_jax.models import iac as iac_lib
from ifan_jax.models.resample import upsample_bilinear
from ifan_jax.weights.convert import convert_state_dict

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("jax2onnx")

ONNX_TOL = 1e-5  # onnxruntime vs the official outputs / our forward (measured ~4e-7)
FORM_TOL = 1e-6  # the export form vs the inference form (float rounding)
DISPARITY_TOL = 1e-6  # onnxruntime's `disparity` vs the JAX estimator's output (relative to its size)


def max_diff(a, b) -> float:
    assert np.shape(a) == np.shape(b), (np.shape(a), np.shape(b))
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def coarse(deblurrer, *views):
    """The disparity map estimator's 1/8-resolution output, as `Deblurrer.deblur_tiled` takes it."""
    return deblurrer.run_batch_coarse(*views)[1]




@pytest.fixture(scope="module", params=["official", "separable"])
def exported(request):
    variant = request.param
    ref = reference(variant)
    params, config = convert_state_dict(reference_state_dict(variant), variant)
    deblurrer = Deblurrer(params, config, bit_depth=8)
    data, metadata = export_onnx_bytes(deblurrer, tile=64, overlap=16, source_digest="ab" * 32)
    return dict(variant=variant, ref=ref, deblurrer=deblurrer, data=data, metadata=metadata,
                session=cpu_session(data))


# --------------------------------------------------------------------------------------------
# The export form equals the inference form


def test_edge_pad_is_jnp_pad_edge():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 7, 3)), jnp.float32)
    for axis in (1, 2):
        for pad in (0, 1, 2):
            widths = [(0, 0)] * 4
            widths[axis] = (pad, pad)
            np.testing.assert_array_equal(iac_lib.edge_pad(x, pad, axis), jnp.pad(x, widths, mode="edge"))


@pytest.mark.parametrize("variant", iac_lib.VARIANTS)
def test_unrolled_iac_equals_scan(variant):
    rng = np.random.default_rng(1)
    n, c, k, d = 3, 4, 3, 6
    features = jnp.asarray(rng.normal(size=(2, 5, 6, c)), jnp.float32)
    head = jnp.asarray(rng.normal(size=(2, 5, 6, d)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(d, iac_lib.iac_channels(n, c, k))) * 0.3, jnp.float32)
    bias = jnp.asarray(rng.normal(size=(iac_lib.iac_channels(n, c, k),)) * 0.1, jnp.float32)
    scan = iac_lib.iac_from_head(features, head, kernel, bias, n, k, variant=variant)
    unrolled = iac_lib.iac_from_head_unrolled(features, head, kernel, bias, n, k, variant=variant)
    assert max_diff(scan, unrolled) <= FORM_TOL * float(jnp.max(jnp.abs(scan)))


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 5, 1), (1, 8, 12, 2)])
def test_upsample_bilinear_equals_defocus_upsample(shape):
    x = np.random.default_rng(2).normal(size=shape).astype(np.float32)
    ref = defocus_lib.upsample(x, 8 * shape[1], 8 * shape[2])
    assert max_diff(upsample_bilinear(x), ref) <= FORM_TOL * float(jnp.max(jnp.abs(ref)))


@pytest.mark.slow
@pytest.mark.parametrize("variant", iac_lib.VARIANTS)
def test_export_forward_equals_eval_forward(variant):
    ref = reference(variant)
    params, config = convert_state_dict(reference_state_dict(variant), variant)
    params = {k: v for k, v in params.items() if k != REBLUR_KEY}
    model = IFAN.from_config(config)
    x = jnp.asarray(ref["input_C"])
    result, disparity, encoded = jax.jit(
        lambda p, x: model.apply({"params": p}, x, method=IFAN.export_forward))(params, x)
    plain = jax.jit(lambda p, x: model.apply({"params": p}, x)["result"])(params, x)
    assert max_diff(result, plain) <= FORM_TOL
    # The disparity map is the estimator's output, as the Deblurrer captures it.
    deblurrer = Deblurrer(params, config)
    combined = deblurrer.run_batch(ref["input_C"], with_defocus=True)
    assert max_diff(upsample_bilinear(disparity), combined[..., 3:]) <= FORM_TOL
    assert max_diff(disparity, coarse(deblurrer, ref["input_C"])) <= FORM_TOL
    assert max_diff(result, combined[..., :3]) <= FORM_TOL
    # `encoded` is the estimator's input, as the Deblurrer's tiled path blends it.
    assert max_diff(encoded, deblurrer.run_batch_features(ref["input_C"])[1]) <= FORM_TOL


# --------------------------------------------------------------------------------------------
# onnxruntime against the official outputs and our forward


@pytest.mark.slow
def test_interface(exported):
    s = exported["session"]
    assert [(i.name, i.type) for i in s.get_inputs()] == [("image", "tensor(float)")]
    assert [o.name for o in s.get_outputs()] == ["deblurred", "defocus", "disparity", "encoded"]
    image = s.get_inputs()[0].shape
    assert image[0] == 1 and image[3] == 3 and all(isinstance(d, str) for d in image[1:3])
    assert s.get_outputs()[0].shape == image
    assert s.get_outputs()[1].shape == image[:3] + [1]
    assert all(o.type == "tensor(float)" for o in s.get_outputs())
    low = s.get_outputs()[2].shape  # [1, H/8, W/8, 1]: symbols of their own
    assert low[0] == 1 and low[3] == 1 and all(isinstance(d, str) for d in low[1:3]) and low[1] != low[2]
    assert s.get_outputs()[3].shape == low[:3] + [32]  # `encoded`: 4 x 8 channels


@pytest.mark.slow
def test_graph_is_written_for_onnxruntime_speed(exported, tmp_path):
    """What made onnxruntime's CPU take 2.6x our JAX's time on the paper's network is gone: each
    LeakyReLU is one LeakyRelu node, which onnxruntime fuses into the convolution before it (not
    GreaterOrEqual, Mul and Where over the whole tensor), and IAC's per-tap filters and biases are
    1x1 convolutions (no Einsum, no per-tap slicing of a filter map)."""
    import onnx

    proto = onnx.load_model_from_string(exported["data"])
    ops = collections.Counter(node.op_type for node in proto.graph.node)
    assert ops["Where"] == ops["GreaterOrEqual"] == ops["Einsum"] == 0, ops
    assert ops["LeakyRelu"] > 0
    # Kernels are stored HWIO and transposed to OIHW in the graph (onnxruntime folds that once, at
    # load): their shapes are the inferred ones.
    inferred = onnx.shape_inference.infer_shapes(proto).graph
    shapes = {t.name: list(t.dims) for t in inferred.initializer}
    shapes.update({v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
                   for v in inferred.value_info})
    pointwise = [n for n in proto.graph.node
                 if n.op_type == "Conv" and shapes.get(n.input[1], [])[2:] == [1, 1]]
    n, k = 3, 3  # the tiny model's N and filter size
    taps = k if exported["variant"] == "official" else 2 * k  # the official IAC has no f_n2
    assert len(pointwise) == n * (taps + 1)
    # After onnxruntime's own optimisation most LeakyRelu nodes live inside convolutions.
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(exported["data"], options, providers=["CPUExecutionProvider"])
    optimized = onnx.load_model(str(tmp_path / "optimized.onnx"))
    fused = [node for node in optimized.graph.node if node.op_type in ("Conv", "FusedConv")
             and any(a.name == "activation" and a.s == b"LeakyRelu" for a in node.attribute)]
    print(f"{exported['variant']}: {len(fused)} convolutions with a fused LeakyReLU of "
          f"{ops['LeakyRelu']} LeakyRelu nodes")
    assert len(fused) >= ops["LeakyRelu"] / 2


@pytest.mark.slow
def test_onnxruntime_matches_official_outputs(exported):
    ref = exported["ref"]
    deblurred = exported["session"].run(None, {"image": ref["input_C"]})[0]
    diff = max_diff(deblurred, ref["result_eval"])
    print(f"{exported['variant']}: onnxruntime vs official max abs {diff:.2e}")
    assert diff <= ONNX_TOL


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(64, 96), (40, 56), (8, 8)])
def test_onnxruntime_matches_deblurrer(exported, shape):
    """Any height and width (multiples of 8) against the Deblurrer's own forward, defocus included;
    `disparity` against the estimator's 1/8-resolution output, `encoded` against its input that
    the Deblurrer's tiled path blends."""
    x = np.random.default_rng(3).random((1, *shape, 3), np.float32)
    deblurred, defocus, disparity, encoded = exported["session"].run(None, {"image": x})
    d = exported["deblurrer"]
    ours = np.asarray(d.run_batch(x, with_defocus=True))
    low = np.asarray(coarse(d, x))
    assert low.shape == (1, shape[0] // 8, shape[1] // 8, 1) and disparity.dtype == np.float32
    print(f"{exported['variant']} {shape}: {max_diff(deblurred, ours[..., :3]):.2e} "
          f"{max_diff(defocus, ours[..., 3:]):.2e} disparity {max_diff(disparity, low):.2e} "
          f"(max |disparity| {np.max(np.abs(low)):.2e})")
    assert max_diff(deblurred, ours[..., :3]) <= ONNX_TOL
    assert max_diff(defocus, ours[..., 3:]) <= ONNX_TOL * max(1.0, float(np.max(np.abs(ours[..., 3:]))))
    assert max_diff(disparity, low) <= DISPARITY_TOL * max(1.0, float(np.max(np.abs(low))))
    # `defocus` is `disparity` upsampled (the same graph, float rounding apart).
    assert max_diff(upsample_bilinear(disparity), defocus) <= FORM_TOL * max(1.0, float(np.max(np.abs(low))))
    features = np.asarray(d.run_batch_features(x)[1])
    assert max_diff(encoded, features) <= ONNX_TOL * max(1.0, float(np.max(np.abs(features))))


@pytest.mark.slow
def test_metadata(exported):
    meta, variant = exported["metadata"], exported["variant"]
    stored = read_metadata(exported["data"])
    assert set(METADATA_KEYS) <= set(stored)
    assert {k: stored[k] for k in METADATA_KEYS} == {k: meta[k] for k in METADATA_KEYS}
    assert all(isinstance(v, str) for v in stored.values())
    assert stored["num_iterations"] == "3" and stored["channels"] == "8"
    assert stored["iac_variant"] == variant and stored["bit_depth"] == "8"
    assert (stored["tile"], stored["overlap"]) == ("64", "16")
    assert (stored["has_defocus"], stored["dual_pixel"]) == ("true", "false")
    assert stored["source_sha256"] == "ab" * 32
    assert stored["map_reach"] == "5,4,10"
    assert int(meta["size_bytes"]) == len(exported["data"])


@pytest.mark.slow
def test_estimator_graph_makes_the_map_from_encoded(exported):
    """estimator.onnx (the disparity map estimator alone, any h and w) on the main graph's `encoded`
    gives its `disparity`, and on any map what `Deblurrer.estimate` gives."""
    if exported["variant"] != "official":
        pytest.skip("one variant is enough")
    d = exported["deblurrer"]
    estimator = cpu_session(export_estimator_bytes(d))
    assert [(i.name, i.shape) for i in estimator.get_inputs()] == [("encoded", [1, "h", "w", 32])]
    assert [o.name for o in estimator.get_outputs()] == ["disparity"]
    x = np.random.default_rng(6).random((1, 48, 80, 3), np.float32)
    _, _, disparity, encoded = exported["session"].run(None, {"image": x})
    scale = max(1.0, float(np.max(np.abs(disparity))))
    assert max_diff(estimator.run(None, {"encoded": encoded})[0], disparity) <= DISPARITY_TOL * scale
    blended = np.random.default_rng(7).standard_normal((1, 13, 21, 32)).astype(np.float32)
    ours = np.asarray(d.estimate(blended))
    assert max_diff(estimator.run(None, {"encoded": blended})[0], ours) <= ONNX_TOL * max(
        1.0, float(np.max(np.abs(ours))))


@pytest.mark.parametrize("tile, overlap", [(0, 0), (60, 8), (64, 60), (64, -8), (True, 0)])
def test_bad_tile_is_refused(tile, overlap):
    with pytest.raises(ExportError):
        check_tile(tile, overlap)


def test_source_sha256_of_a_folder(tmp_path):
    a = tmp_path / "a"
    (a / "sub").mkdir(parents=True)
    (a / "x.json").write_bytes(b"{}")
    (a / "sub" / "y.bin").write_bytes(b"\x00\x01")
    digest = source_sha256(a)
    shutil.copytree(a, tmp_path / "b")
    assert source_sha256(tmp_path / "b") == digest  # the folder's location does not count
    (tmp_path / "b" / "sub" / "y.bin").rename(tmp_path / "b" / "sub" / "z.bin")
    assert source_sha256(tmp_path / "b") != digest  # a file's name does
    (a / "x.json").write_bytes(b"{ }")
    assert source_sha256(a) != digest  # and its bytes
    f = tmp_path / "w.pytorch"
    f.write_bytes(b"weights")
    assert source_sha256(f) == hashlib.sha256(b"weights").hexdigest()


@pytest.mark.slow
def test_dual_pixel_model_takes_three_views(tmp_path):
    config = {"channels": 8, "num_iterations": 3, "reblur_iterations": 3, "dual_pixel_input": True,
              "iac_variant": "official"}
    model = IFAN.from_config(config)
    x = jnp.zeros((1, 32, 32, 3), jnp.float32)
    params = model.init(jax.random.PRNGKey(0), x, x, x)["params"]
    deblurrer = Deblurrer(params, config)
    data, meta = export_onnx_bytes(deblurrer, tile=64, overlap=16)
    assert meta["dual_pixel"] == "true"
    s = cpu_session(data)
    assert [i.name for i in s.get_inputs()] == ["image", "right", "left"]
    views = [np.random.default_rng(i).random((1, 48, 40, 3), np.float32) for i in range(3)]
    deblurred, defocus, disparity, encoded = s.run(None, dict(zip(("image", "right", "left"), views)))
    ours = np.asarray(deblurrer.run_batch(*views, with_defocus=True))
    assert max_diff(deblurred, ours[..., :3]) <= ONNX_TOL
    assert max_diff(defocus, ours[..., 3:]) <= ONNX_TOL
    assert max_diff(disparity, coarse(deblurrer, *views)) <= ONNX_TOL


@pytest.mark.slow
@pytest.mark.parametrize("overrides, outputs", [
    ({"use_disparity": False}, ["deblurred"]),
    ({"use_filter_prediction": False}, ["deblurred", "defocus", "disparity", "encoded"]),
    ({"adaptive_conv": "fac", "fac_kernel_size": 5}, ["deblurred", "defocus", "disparity", "encoded"]),
])
def test_variants_export(overrides, outputs):
    config = {"channels": 8, "num_iterations": 3, "reblur_iterations": 3, "use_reblur": False,
              **overrides}
    model = IFAN.from_config(config)
    params = model.init(jax.random.PRNGKey(1), jnp.zeros((1, 32, 32, 3), jnp.float32))["params"]
    deblurrer = Deblurrer(params, config)
    data, meta = export_onnx_bytes(deblurrer, tile=64, overlap=16)
    s = cpu_session(data)
    assert [o.name for o in s.get_outputs()] == outputs
    x = np.random.default_rng(4).random((1, 32, 48, 3), np.float32)
    got = s.run(None, {"image": x})
    ours = np.asarray(deblurrer.run_batch(x, with_defocus=len(outputs) > 1))
    assert max_diff(got[0], ours[..., :3]) <= ONNX_TOL
    if len(outputs) > 1:
        assert max_diff(got[1], ours[..., 3:]) <= ONNX_TOL
        assert max_diff(got[2], coarse(deblurrer, x)) <= ONNX_TOL
    assert meta["has_defocus"] == ("true" if len(outputs) > 1 else "false")


@pytest.mark.slow
def test_float16_export(exported):
    """--precision=float16: half the file, float32 outputs, close to the float32 forward."""
    if exported["variant"] != "official":
        pytest.skip("one variant is enough")
    data, meta = export_onnx_bytes(exported["deblurrer"], tile=64, overlap=16, precision="float16")
    assert meta["precision"] == "float16"
    assert len(data) < 0.6 * len(exported["data"])
    s = cpu_session(data)
    deblurred, defocus, disparity, encoded = s.run(None, {"image": exported["ref"]["input_C"]})
    assert deblurred.dtype == defocus.dtype == disparity.dtype == encoded.dtype == np.float32
    mse = float(np.mean((deblurred.astype(np.float64) - exported["ref"]["result_eval"]) ** 2))
    assert 10 * np.log10(1 / mse) > 50
    assert max_diff(deblurred, exported["ref"]["result_eval"]) < 5e-3


# --------------------------------------------------------------------------------------------
# The API's file writing and the command


@pytest.mark.slow
def test_export_onnx_refuses_to_overwrite(tmp_path, exported):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        export_onnx(exported["deblurrer"], path, tile=64, overlap=16)
    assert path.read_bytes() == b"keep"


def _cli(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "ifan_jax.export", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=600)


@pytest.mark.slow
def test_cli_exports_a_converted_checkpoint(tmp_path, tiny_official_checkpoint):
    out = tmp_path / "tiny.onnx"
    run = _cli(f"--ckpt={tiny_official_checkpoint}", f"--output={out}", "--tile=64", "--overlap=16",
               "--fixed_shape", "--check")
    assert run.returncode == 0, run.stderr
    assert "check at 64x64" in run.stderr
    meta = read_metadata(out)
    assert meta["source_sha256"] == source_sha256(tiny_official_checkpoint)
    assert (meta["tile"], meta["overlap"], meta["input_shape"]) == ("64", "16", "[1, 64, 64, 3]")
    s = cpu_session(out.read_bytes())
    assert s.get_inputs()[0].shape == [1, 64, 64, 3]
    ref = reference("official")
    x = np.ascontiguousarray(ref["input_C"][:, :, :64])
    deblurrer = Deblurrer.from_checkpoint(tiny_official_checkpoint)
    assert max_diff(s.run(None, {"image": x})[0], deblurrer.run_batch(x)) <= ONNX_TOL
    # An existing output is kept.
    before = out.read_bytes()
    again = _cli(f"--ckpt={tiny_official_checkpoint}", f"--output={out}")
    assert again.returncode == 1
    assert again.stderr.count("\n") == 1 and "exists" in again.stderr and str(out) in again.stderr
    assert out.read_bytes() == before


@pytest.mark.parametrize("args, code, text", [
    (["--ckpt=/nonexistent/IFAN.pytorch", "--output=x.onnx"], 2, "/nonexistent/IFAN.pytorch"),
    (["--ckpt=."], 2, "--output"),
    (["--ckpt=.", "--output=x.onnx", "--tile=100"], 2, "--tile"),
    (["--ckpt=.", "--output=x.onnx", "--tile=64", "--overlap=60"], 2, "--overlap"),
])
@pytest.mark.slow
def test_cli_usage_mistakes_are_one_line(tmp_path, args, code, text):
    run = _cli(*args, cwd=tmp_path)
    assert run.returncode == code, run.stderr
    assert run.stderr.count("\n") == 1 and text in run.stderr, run.stderr
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.slow
def test_cli_bad_checkpoint_is_one_line(tmp_path):
    folder = tmp_path / "notackpt"
    folder.mkdir()
    (folder / "readme.txt").write_text("hello")
    bad_file = tmp_path / "broken.pytorch"
    bad_file.write_bytes(b"not a checkpoint")
    for ckpt in (folder, bad_file):
        run = _cli(f"--ckpt={ckpt}", f"--output={tmp_path / 'x.onnx'}")
        assert run.returncode == 1, run.stderr
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and str(ckpt) in lines[0], run.stderr
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.slow
def test_written_checkpoint_round_trip_metadata(tmp_path):
    """bit_depth recorded in model_config.json reaches the metadata."""
    params, config = convert_state_dict(reference_state_dict("official"), "official")
    path = str(tmp_path / "ckpt")
    checkpoint.save_inference_checkpoint(path, params, {**config, "bit_depth": 16})
    with open(os.path.join(path, checkpoint.MODEL_CONFIG_FILE)) as f:
        assert json.load(f)["bit_depth"] == 16
    meta = export_onnx(path, tmp_path / "m.onnx", tile=64, overlap=16, fixed_shape=True)
    assert meta["bit_depth"] == "16" and meta["source_sha256"] == source_sha256(path)
    assert read_metadata(tmp_path / "m.onnx")["bit_depth"] == "16"


def test_cli_web_without_the_site_writer(tmp_path, tiny_official_checkpoint, monkeypatch, capsys):
    from ifan_jax.export import cli

    monkeypatch.setattr(cli, "_site_writer", lambda: None)
    code = cli.main([f"--ckpt={tiny_official_checkpoint}", f"--web={tmp_path / 'site'}"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "the web page writer is not installed" in err
    assert not (tmp_path / "site").exists()


@pytest.mark.slow
def test_cli_web_and_output_are_exclusive(tmp_path):
    run = _cli("--ckpt=.", "--output=x.onnx", f"--web={tmp_path / 'site'}", cwd=tmp_path)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "exactly one" in run.stderr
