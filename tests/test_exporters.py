"""Exporters: ONNX round trips (tiny and pruned models), atomic writes, torch files, TensorRT."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch_pruning as tp
from torch import nn

from catalyst_deploy.errors import ExportValidationError, MissingDependency, UsageError
from catalyst_deploy.exporters import ExportOptions, export_model
from catalyst_deploy.formats import get_format
from catalyst_deploy.exporters.onnx import onnx_sample_shape, torch_to_onnx
from catalyst_deploy.exporters.torch import save_torch_module, torch_artifact_paths

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
HAS_CUDA = torch.cuda.is_available()


class TinyResNet(nn.Module):
    """Stem, one residual block (coupled channels), head: enough structure for torch-pruning."""

    def __init__(self, width: int = 16, classes: int = 5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(width, width * 2, 3, padding=1, bias=False), nn.BatchNorm2d(width * 2),
                                   nn.ReLU(), nn.Conv2d(width * 2, width, 3, padding=1, bias=False), nn.BatchNorm2d(width))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, classes))

    def forward(self, x):
        x = self.stem(x)
        return self.head(torch.relu(x + self.block(x)))


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = TinyResNet().eval()
    for m in model.modules():  # non-trivial BN statistics, so BN folding is really exercised
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


def prune_uniformly(model: nn.Module, example: torch.Tensor, channel_ratio: float, round_to: int | None = None) -> float:
    """Remove `channel_ratio` of every prunable layer's channels (L2 magnitude, torch-pruning, one shot);
    returns the MACs ratio pruned/dense (about (1 - channel_ratio)^2)."""
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1:]
    dense, _ = tp.utils.count_ops_and_params(model, example)
    tp.pruner.MetaPruner(model, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                         pruning_ratio=channel_ratio, ignored_layers=head, round_to=round_to).step()
    return tp.utils.count_ops_and_params(model, example)[0] / dense


def ort_output(path, x: torch.Tensor) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]


# ---- ONNX -----------------------------------------------------------------------------------------
def test_onnx_round_trip_with_dynamic_batch(tmp_path):
    model, path = tiny_model(), tmp_path / "tiny.onnx"
    check = torch_to_onnx(model, torch.randn(1, 3, 20, 20), path)
    onnx.checker.check_model(str(path))
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input"] and [o.name for o in graph.output] == ["output"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert onnx_sample_shape(path) == (3, 20, 20)
    for batch in (1, 3):  # one file, two batch sizes
        x = torch.randn(batch, 3, 20, 20)
        expected = model(x).detach().numpy()
        np.testing.assert_allclose(ort_output(path, x), expected, atol=1e-4)
    assert check.max_abs_diff <= check.atol <= 1e-3


def test_onnx_static_batch_when_asked(tmp_path):
    path = tmp_path / "static.onnx"
    torch_to_onnx(tiny_model(), torch.randn(2, 3, 16, 16), path, dynamic_batch=False)
    assert onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2


def test_onnx_round_trip_of_a_pruned_model(tmp_path):
    model, example = tiny_model(), torch.randn(1, 3, 24, 24)
    ratio = prune_uniformly(model, example, 0.3)
    assert ratio < 0.6 and model.stem[0].out_channels < 16  # channels really removed
    path = tmp_path / "pruned.onnx"
    export_model(model, "onnx", path, example)
    x = torch.randn(3, 3, 24, 24)
    np.testing.assert_allclose(ort_output(path, x), model(x).detach().numpy(), atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_onnx_round_trip_of_pruned_torchvision_models(tmp_path, name):
    import torchvision

    torch.manual_seed(0)
    model, example = torchvision.models.get_model(name, num_classes=10).eval(), torch.randn(1, 3, 64, 64)
    ratio = prune_uniformly(model, example, 0.3, round_to=8)
    assert 0.4 < ratio < 0.6  # about half the MACs
    result = export_model(model, "onnx", tmp_path / f"{name}.onnx", example)
    assert result.max_abs_diff <= result.atol
    x = torch.randn(3, 3, 64, 64)
    expected = model(x).detach().numpy()
    np.testing.assert_allclose(ort_output(result.path, x), expected, atol=1e-4 * max(1.0, np.abs(expected).max()))


def test_failed_validation_leaves_no_file(tmp_path):
    path = tmp_path / "model.onnx"
    with pytest.raises(ExportValidationError) as err:
        torch_to_onnx(tiny_model(), torch.randn(1, 3, 16, 16), path, atol=1e-12)
    assert err.value.max_abs_diff > err.value.atol == 1e-12
    assert "max abs diff" in str(err.value) and "tolerance" in str(err.value)
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temp file


def test_failed_export_keeps_the_previous_file(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"previous")
    with pytest.raises(ExportValidationError):
        export_model(tiny_model(), "onnx", path, torch.randn(1, 3, 16, 16), atol=1e-12)
    assert path.read_bytes() == b"previous" and len(list(tmp_path.iterdir())) == 1


# ---- registry -------------------------------------------------------------------------------------
def test_unknown_format_suggests_the_closest():
    with pytest.raises(UsageError, match="did you mean 'onnx'"):
        get_format("onx")


def test_option_that_does_not_apply_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="does not apply to format 'onnx'"):
        export_model(tiny_model(), "onnx", tmp_path / "m.onnx", torch.randn(1, 3, 8, 8), precision="fp16")
    with pytest.raises(UsageError, match="precision"):
        ExportOptions(precision="fp16").for_format("onnx")
    assert ExportOptions(opset=13).for_format("onnx") == {"opset": 13}


def test_export_result_reports_the_check(tmp_path):
    result = export_model(tiny_model(), "onnx", tmp_path / "m.onnx", torch.randn(1, 3, 8, 8), opset=13)
    assert result.path.is_file() and result.fmt == "onnx" and 0 <= result.max_abs_diff <= result.atol
    assert result.seconds > 0 and set(result.to_dict()) == {"path", "format", "max_abs_diff", "atol", "seconds"}
    assert onnx.load(str(result.path)).opset_import[0].version == 13


# ---- torch ----------------------------------------------------------------------------------------
def test_torch_export_writes_module_state_dict_and_plan(tmp_path):
    model, x = tiny_model(), torch.randn(2, 3, 16, 16)
    plan = {"format": 1, "layers": {"stem.0": {"out": [0, 2, 5]}}}
    check = save_torch_module(model, x, tmp_path / "pruned.pt", plan=plan)
    paths = torch_artifact_paths(tmp_path / "pruned.pt")
    assert check.max_abs_diff == 0.0
    reloaded = torch.load(paths["module"], weights_only=False)
    torch.testing.assert_close(reloaded(x), model(x))
    fresh = tiny_model(seed=1)
    fresh.load_state_dict(torch.load(paths["state_dict"]))
    torch.testing.assert_close(fresh(x), model(x))
    assert json.loads(paths["plan"].read_text()) == plan


def test_torch_export_rejects_a_plan_that_is_not_json(tmp_path):
    with pytest.raises(UsageError, match="JSON"):
        export_model(tiny_model(), "torch", tmp_path / "m.pt", torch.randn(1, 3, 8, 8), plan={"bad": object()})
    assert list(tmp_path.iterdir()) == []


# ---- TensorRT -------------------------------------------------------------------------------------
@pytest.mark.skipif(HAS_TENSORRT and HAS_CUDA, reason="TensorRT and a GPU are present")
def test_tensorrt_missing_is_one_clear_line(tmp_path):
    from catalyst_deploy.exporters.tensorrt import onnx_to_engine, require_tensorrt
    from catalyst_deploy.exporters.tensorrt_runtime import EngineRunner

    calls = [require_tensorrt,
             lambda: export_model(tiny_model(), "trt", tmp_path / "m.engine", torch.randn(1, 3, 8, 8)),
             lambda: onnx_to_engine(tmp_path / "missing.onnx", tmp_path / "m.engine"),
             lambda: EngineRunner(tmp_path / "m.engine")]
    for call in calls:
        with pytest.raises(MissingDependency) as err:
            call()
        message = str(err.value)
        assert "\n" not in message
        assert ("pip install 'catalyst-deploy[tensorrt]'" in message) == (not HAS_TENSORRT)
        assert ("CUDA GPU" in message) == (not HAS_CUDA)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.skipif(not (HAS_TENSORRT and HAS_CUDA), reason="needs tensorrt and a CUDA GPU")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_engine_round_trip(tmp_path, precision):
    from catalyst_deploy.exporters.tensorrt_runtime import EngineRunner

    model = tiny_model()
    result = export_model(model, "trt", tmp_path / "m.engine", torch.randn(1, 3, 32, 32), precision=precision,
                          max_batch=4)
    runner = EngineRunner(result.path)
    assert runner.sample_shape == (3, 32, 32)
    x = torch.randn(3, 3, 32, 32)
    out = runner(x.cuda())[0]
    torch.cuda.synchronize()
    tolerance = {"fp32": 1e-3, "fp16": 3e-2}[precision]
    torch.testing.assert_close(out.cpu().float(), model(x).detach(), atol=tolerance, rtol=tolerance)


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.skipif(not (HAS_TENSORRT and HAS_CUDA), reason="needs tensorrt and a CUDA GPU")
def test_tensorrt_int8_calibrates_from_a_loader(tmp_path):
    loader = [(torch.randn(4, 3, 32, 32), torch.zeros(4)) for _ in range(4)]
    result = export_model(tiny_model(), "trt", tmp_path / "m.engine", torch.randn(1, 3, 32, 32), precision="int8",
                          max_batch=4, calib_loader=loader)
    assert result.path.is_file() and result.max_abs_diff <= result.atol


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.skipif(not (HAS_TENSORRT and HAS_CUDA), reason="needs tensorrt and a CUDA GPU")
def test_tensorrt_failed_validation_leaves_no_engine(tmp_path):
    with pytest.raises(ExportValidationError):
        export_model(tiny_model(), "trt", tmp_path / "m.engine", torch.randn(1, 3, 16, 16), precision="fp16",
                     max_batch=2, atol=1e-12)
    assert not (tmp_path / "m.engine").exists()


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
@pytest.mark.parametrize("name", ["tiny_cnn", "small_resnet"])
def test_both_onnx_exporters_on_the_zoo(tmp_path, exporter, name):
    from catalyst_deploy.inputs import zoo
    from catalyst_deploy.exporters.onnx import read_metadata, torch_to_onnx

    model = getattr(zoo, name)().eval()
    check = torch_to_onnx(model, torch.randn(1, 1, 28, 28), tmp_path / "m.onnx", exporter=exporter,
                          metadata={"source_model": f"zoo:{name}"})
    assert check.max_abs_diff <= check.atol
    meta = read_metadata(tmp_path / "m.onnx")
    assert meta["exporter"] == exporter and meta["source_model"] == f"zoo:{name}"


def test_an_opset_the_dynamo_exporter_cannot_write_falls_back_with_the_reason(tmp_path, caplog):
    import logging

    from catalyst_deploy.exporters.onnx import read_metadata, torch_to_onnx

    with caplog.at_level(logging.WARNING, logger="catalyst_deploy.exporters.onnx"):
        torch_to_onnx(tiny_model(), torch.randn(1, 3, 8, 8), tmp_path / "m.onnx", opset=13)
    assert read_metadata(tmp_path / "m.onnx")["exporter"] == "torchscript"
    assert "TorchScript" in caplog.text
    assert onnx.load(str(tmp_path / "m.onnx")).opset_import[0].version == 13


def tiny_torchvision_vit():
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(32, 16, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32,
                                                 num_classes=10).eval()
    nn.init.normal_(model.heads.head.weight)  # torchvision starts it at zero: every output would be 0
    return model


def test_a_torchvision_vit_exports_with_a_dynamic_batch(tmp_path):
    """nn.MultiheadAttention traced at batch 1 by torch.export came out with the batch baked into a Reshape:
    ONNX Runtime failed at batch 3 (issue 17). Traced at batch 2, the file runs at 1 and 3."""
    from catalyst_deploy.exporters.onnx import read_metadata

    model = tiny_torchvision_vit()
    check = torch_to_onnx(model, torch.randn(1, 3, 32, 32), tmp_path / "vit.onnx")
    assert read_metadata(tmp_path / "vit.onnx")["exporter"] == "dynamo"  # no fallback needed
    session = ort.InferenceSession(str(tmp_path / "vit.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        x = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            expected = model(x).numpy()
        actual = session.run(None, {"input": x.numpy()})[0]
        assert np.abs(actual - expected).max() <= 1e-4 * np.abs(expected).max()
    assert check.max_abs_diff <= check.atol


def test_a_file_onnx_runtime_cannot_run_falls_back_to_torchscript(tmp_path, caplog, monkeypatch):
    import logging

    from catalyst_deploy.exporters import onnx as onnx_exporter

    monkeypatch.setattr(onnx_exporter, "_traced_example", lambda example, _dynamic: example)  # the old trace at 1
    with caplog.at_level(logging.WARNING, logger="catalyst_deploy.exporters.onnx"):
        check = torch_to_onnx(tiny_torchvision_vit(), torch.randn(1, 3, 32, 32), tmp_path / "vit.onnx")
    assert onnx_exporter.read_metadata(tmp_path / "vit.onnx")["exporter"] == "torchscript"
    assert "does not run in ONNX Runtime" in caplog.text and "at batch 3" in caplog.text
    assert check.max_abs_diff <= check.atol


def test_a_model_too_large_for_one_onnx_file_is_refused_before_export(tmp_path, monkeypatch):
    from catalyst_deploy.errors import CatalystDeployError
    from catalyst_deploy.exporters import onnx as onnx_exporter

    monkeypatch.setattr(onnx_exporter, "PROTOBUF_LIMIT_BYTES", 1000)  # tiny_model holds more than 1000 bytes
    with pytest.raises(CatalystDeployError, match="an ONNX file holds at most 2 GiB"):
        torch_to_onnx(tiny_model(), torch.randn(1, 3, 8, 8), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []
