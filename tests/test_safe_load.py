"""The pickle allowlist (catalyst_deploy.inputs.safe_load): what it holds, and crafted payloads it must stop.

Every payload test first loads its file with ``torch.load(weights_only=False)`` and checks that the
payload's side effect (a file in tmp_path) happens: the file really is an exploit, so the tool's
loader is what stops it when the side effect then does not happen through the tool.
"""

from __future__ import annotations

import builtins
import contextlib
import copyreg
import functools
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from catalyst_deploy.inputs import safe_load, zoo
from catalyst_deploy.errors import UsageError
from catalyst_deploy.inputs.models import load_model, safe_globals, safe_module_classes

HOOKS = ("__reduce__", "__reduce_ex__", "__setstate__", "__getstate__")
TORCH_ADVICE = ("weights_only", "Weights only", "add_safe_globals", "In PyTorch 2.6")


# ---- payload builders ------------------------------------------------------------------------------


def touch_code(marker: Path) -> str:
    """Python source that creates ``marker``: the side effect every payload tries to cause."""
    return f"open({str(marker)!r}, 'w').close()"


class Call:
    """Pickles as ``func(*args)``: the unpickler calls func while loading."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


class AsInstanceOf:
    """Pickles as ``cls.__new__(cls, *args)`` (NEWOBJ) whose ``__setstate__`` is then fed ``state`` (BUILD)."""

    def __init__(self, cls, state, *args):
        self._cls, self._state, self._args = cls, state, args

    @property
    def __class__(self):  # pickle checks that __newobj__'s class is the object's
        return self._cls

    def __reduce_ex__(self, protocol):
        return copyreg.__newobj__, (self._cls, *self._args), self._state


def classic_payloads(marker: Path) -> dict:
    """Name -> object whose unpickling (or, for 'partial_attribute', calling an attribute) creates ``marker``."""
    code = touch_code(marker)
    attribute = nn.Sequential(nn.Linear(2, 2))
    attribute.hook = functools.partial(os.system, f"touch {marker}")
    return {
        "os_system": Call(os.system, f"touch {marker}"),
        "builtins_exec": Call(builtins.exec, code),
        "builtins_eval": Call(builtins.eval, code),
        "subprocess_popen": Call(subprocess.Popen, [sys.executable, "-c", code]),
        "partial_called": Call(functools.partial(os.system, f"touch {marker}")),
        "partial_attribute": attribute,
        "graph_module": graph_module_payload(marker),
    }


def graph_module_payload(marker: Path) -> Call:
    """A GraphModule pickle (reduce_graph_module(body, import_block)) whose import block creates ``marker``:
    fx regenerates the module by running that source."""
    traced = torch.fx.symbolic_trace(nn.Sequential(nn.Linear(2, 2)))
    reduce_fn, (body, import_block) = traced.__reduce__()
    return Call(reduce_fn, body, f"{touch_code(marker)}\n{import_block}")


def save(obj, path: Path, container: str) -> Path:
    """torch.save ``obj`` as a zip checkpoint or in the legacy (non-zip) format."""
    torch.save(obj, path, _use_new_zipfile_serialization=(container == "zip"))
    return path


def assert_payload_runs(path: Path, marker: Path, call_attribute: bool = False) -> None:
    """Positive control: ``torch.load(weights_only=False)`` does run the payload. Removes the marker after."""
    with contextlib.suppress(Exception):  # the payload may leave something unusable: only the effect counts
        loaded = torch.load(path, weights_only=False)
        if isinstance(loaded, subprocess.Popen):
            loaded.wait(timeout=60)
        if call_attribute:
            loaded.hook()
    assert marker.exists(), "the payload did not run: it would prove nothing"
    marker.unlink()


def assert_one_line_refusal(err: pytest.ExceptionInfo, *names: str) -> None:
    """The tool's message: one line, naming ``names`` and --trust-pickle, with none of torch's advice."""
    message = str(err.value)
    assert "\n" not in message and "--trust-pickle" in message
    assert not any(advice in message for advice in TORCH_ADVICE), message
    for name in names:
        assert name in message


# ---- what the allowlist holds --------------------------------------------------------------------


def test_allowlist_holds_the_zoo_blocks_and_nothing_that_regenerates_code():
    names = {f"{c.__module__}.{c.__qualname__}" for c in safe_module_classes()}
    for needed in (
        "torch.nn.modules.conv.Conv2d", "torchvision.models.resnet.BasicBlock",
        "torchvision.models.mobilenetv2.InvertedResidual", "torchvision.ops.misc.Conv2dNormActivation",
        "torchvision.ops.misc.SqueezeExcitation", "torchvision.ops.stochastic_depth.StochasticDepth",
        "torchvision.ops.misc.FrozenBatchNorm2d", "torchvision.models._utils.IntermediateLayerGetter",
        "catalyst_deploy.inputs.zoo.SmallResNet", "catalyst_deploy.inputs.zoo.ResidualBlock",
    ):
        assert needed in names
    for banned in ("torch.fx", "torch.ao", "torch.jit", "torch.nn.parallel", "feature_extraction", "quantization"):
        assert not [n for n in names if banned in n]
    # classes only imported into a walked module are not listed under it: nn.Module only once
    assert [n for n in names if n.endswith(".Module")] == ["torch.nn.modules.module.Module"]
    assert 250 < len(names) < 2000


def test_classes_whose_unpickling_runs_code_are_flagged_and_absent():
    from torch.fx.graph_module import GraphModule, _CodeOnlyModule
    from torch.nn.parallel import DistributedDataParallel
    from torchvision.models.feature_extraction import DualGraphModule

    for cls in (GraphModule, _CodeOnlyModule, DualGraphModule, DistributedDataParallel, nn.Container):
        assert safe_load.unpickling_may_run_code(cls) and cls not in safe_module_classes()
    assert not any(safe_load.unpickling_may_run_code(cls) for cls in safe_module_classes())


def test_the_only_non_module_globals_are_partial_relu_gelu_and_timms_format():
    others = [g for g in safe_globals() if not isinstance(g, tuple) and not (isinstance(g, type) and issubclass(g, nn.Module))]
    names = sorted(f"{g.__module__}.{g.__qualname__}" for g in others)
    expected = ["functools.partial", "torch._C._nn.gelu", "torch.nn.functional.relu"]
    if importlib.util.find_spec("timm") is not None:
        expected.append("timm.layers.format.Format")
    assert names == sorted(expected)


SMALL_MODELS = {  # small configurations of the architectures whose pickles need the non-module globals
    "mobilenet_v2": lambda: torchvision.models.mobilenet_v2(num_classes=3),
    "efficientnet_b0": lambda: torchvision.models.efficientnet_b0(num_classes=3),
    "vit": lambda: torchvision.models.VisionTransformer(32, 16, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32),
    "convnext": lambda: torchvision.models.convnext.ConvNeXt([torchvision.models.convnext.CNBlockConfig(8, None, 2)]),
    "swin": lambda: torchvision.models.SwinTransformer([4, 4], 8, [2], [1], [2, 2], num_classes=3),
    "transformer_layers": lambda: nn.Sequential(nn.TransformerEncoderLayer(8, 2, 16),
                                                nn.TransformerDecoderLayer(8, 2, 16, activation="gelu")),
    "tiny_cnn": zoo.tiny_cnn,
}


@pytest.mark.parametrize("name", sorted(SMALL_MODELS))
def test_saved_models_need_nothing_beyond_the_allowlist(tmp_path, name):
    model = SMALL_MODELS[name]()
    torch.save(model, tmp_path / "m.pt")
    with torch.serialization.safe_globals(safe_globals()):
        assert torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "m.pt") == []
    assert type(load_model(str(tmp_path / "m.pt"))) is type(model)


def test_a_zoo_model_saved_before_the_layout_move_still_loads(tmp_path, monkeypatch):
    """pruned.pt files of zoo models written before the package had layer folders name `catalyst_deploy.zoo`."""
    model = zoo.tiny_cnn()
    monkeypatch.setitem(sys.modules, "catalyst_deploy.zoo", zoo)
    for cls in (zoo.TinyCNN,):
        monkeypatch.setattr(cls, "__module__", "catalyst_deploy.zoo")
    torch.save(model, tmp_path / "old.pt")
    monkeypatch.undo()
    assert "catalyst_deploy.zoo.TinyCNN" in torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "old.pt")
    loaded = load_model(str(tmp_path / "old.pt"))
    assert type(loaded) is zoo.TinyCNN
    torch.testing.assert_close(loaded(torch.zeros(1, 1, 28, 28)), model(torch.zeros(1, 1, 28, 28)))


def test_importing_models_does_not_import_torch():
    code = "import sys, catalyst_deploy.inputs.models, catalyst_deploy.inputs.safe_load; assert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr


# ---- crafted payloads ----------------------------------------------------------------------------


def allowlisted_classes_with_hooks() -> list[type]:
    """Every class on the allowlist that defines __reduce__, __reduce_ex__, __setstate__ or __getstate__ itself."""
    return [g for g in safe_globals() if isinstance(g, type) and any(hook in vars(g) for hook in HOOKS)]


HOOKED = allowlisted_classes_with_hooks()


def test_the_hooked_classes_include_the_ones_reviewed():
    names = {f"{c.__module__}.{c.__qualname__}" for c in HOOKED}
    assert {"functools.partial", "torch.nn.modules.module.Module", "torch.nn.modules.rnn.RNNBase"} <= names
    assert {n for n in names if n.startswith("torch.nn.")} <= safe_load.REVIEWED_SETSTATE


@pytest.mark.parametrize("abuse", ["setstate", "reduce"])
@pytest.mark.parametrize("cls", HOOKED, ids=lambda c: c.__qualname__)
def test_hooked_class_cannot_carry_an_attacker_global(tmp_path, cls, abuse):
    marker = tmp_path / "pwned"
    evil = Call(builtins.exec, touch_code(marker))
    # setstate: an instance of cls whose __setstate__ is fed a state naming exec;
    # reduce: cls called with an argument that exec builds
    new_args = (nn.Identity,) if cls is functools.partial else ()  # partial() needs a callable
    state = {"_modules": {}, "payload": evil}
    payload = AsInstanceOf(cls, state, *new_args) if abuse == "setstate" else Call(cls, evil)
    path = save(payload, tmp_path / "payload.pt", "zip")
    assert_payload_runs(path, marker)
    with pytest.raises(UsageError) as err:
        load_model(str(path))
    assert_one_line_refusal(err, "builtins.exec")
    with pytest.raises(UsageError) as err:  # the weights_only load alone, without the scan before it
        safe_load._torch_load(path, weights_only=True)
    assert_one_line_refusal(err, "builtins.exec")
    assert not marker.exists()


NAMED_IN_MESSAGE = {  # payload -> the blocked global the message must name
    "os_system": os.system.__module__ + ".system", "builtins_exec": "builtins.exec", "builtins_eval": "builtins.eval",
    "subprocess_popen": ".Popen",  # protocol 2 writes it as commands.Popen
    "partial_called": ".system", "partial_attribute": ".system", "graph_module": "reduce_graph_module",
}
PAYLOAD_NAMES = sorted(NAMED_IN_MESSAGE)


@pytest.mark.parametrize("role", ["model", "weights"])
@pytest.mark.parametrize("container", ["zip", "legacy"])
@pytest.mark.parametrize("name", PAYLOAD_NAMES)
def test_classic_payload_is_refused_and_runs_nothing(tmp_path, name, container, role):
    marker = tmp_path / "pwned"
    payloads = classic_payloads(marker)
    assert sorted(payloads) == PAYLOAD_NAMES
    path = save(payloads[name], tmp_path / "payload.pt", container)
    assert_payload_runs(path, marker, call_attribute=name == "partial_attribute")
    with pytest.raises(UsageError) as err:
        if role == "model":
            load_model(str(path))
        else:
            load_model("zoo:tiny_cnn", weights=path)
    assert_one_line_refusal(err, str(path), NAMED_IN_MESSAGE[name])
    assert not marker.exists()


def test_partial_called_from_the_pickle_is_refused_even_when_it_wraps_an_allowed_class(tmp_path):
    # REDUCE on a partial object (not a global): torch words this 'reduce for unrecognized function'
    path = save(Call(functools.partial(nn.Identity)), tmp_path / "p.pt", "zip")
    with pytest.raises(UsageError) as err:
        load_model(str(path))
    assert_one_line_refusal(err, "functools.partial")


@pytest.mark.parametrize("kind", ["traced", "feature_extractor"])
def test_real_graph_module_pickles_are_refused(tmp_path, kind):
    from torchvision.models.feature_extraction import create_feature_extractor

    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    graph = torch.fx.symbolic_trace(model) if kind == "traced" else create_feature_extractor(model, ["1"])
    torch.save(graph, tmp_path / "g.pt")
    with pytest.raises(UsageError) as err:
        load_model(str(tmp_path / "g.pt"))
    assert_one_line_refusal(err, "torch.fx.graph_module.reduce_graph_module")


# ---- torch's wording -----------------------------------------------------------------------------


# Wordings copied from torch 2.14's torch/_weights_only_unpickler.py (the payload tests above meet
# the first, second and last for real; the others need a class that no GLOBAL names).
BUILD_REFUSED = ("Can only build Tensor, Parameter, OrderedDict or types allowlisted via `add_safe_globals`, "
                 "but got <class 'a.B'>")
NEWOBJ_REFUSED = ("Can only create new object for nn.Parameter or classes allowlisted via `add_safe_globals` "
                  "but got <class 'a.C'>")
REDUCE_REFUSED = ("Weights only load failed.\n\nTrying to call reduce for unrecognized function "
                  "functools.partial(<class 'x.Y'>)\n\nCheck the documentation")


@pytest.mark.parametrize(
    ("message", "names"),
    [
        ("WeightsUnpickler error: Unsupported global: GLOBAL my.mod.Net was not an allowed global by default.",
         ["my.mod.Net"]),
        ("GLOBAL eval was not an allowed global by default. Please use", ["builtins.eval"]),
        ("GLOBAL t.make.<locals>.Net was not an allowed global", ["t.make.<locals>.Net"]),
        ("Trying to load unsupported GLOBAL posix.system whose module posix is blocked.", ["posix.system"]),
        (BUILD_REFUSED, ["a.B"]),
        (NEWOBJ_REFUSED, ["a.C"]),
        (REDUCE_REFUSED, ["functools.partial(<class 'x.Y'>)"]),
        ("Only persistent_load of storage is allowed, but got <class 'str'>", []),
    ],
)
def test_blocked_globals_reads_each_wording_of_torch(message, names):
    assert safe_load.blocked_globals(message) == names
