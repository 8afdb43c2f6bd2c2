"""Model specs (catalyst_deploy.inputs.models) and the package's own models (catalyst_deploy.inputs.zoo)."""

from __future__ import annotations

import logging

import pytest
import torch
import torchvision
from torch import nn

from catalyst_deploy.inputs import zoo
from catalyst_deploy.errors import MissingDependency, UsageError
from catalyst_deploy.inputs.models import load_model, model_input_channels, save_model


class CustomNet(nn.Module):
    """A class outside the allowlist: loading a pickle of it needs --trust-pickle."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x)


def plain_factory():
    """A factory that takes neither num_classes nor in_channels."""
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2))


def outputs_match(a: nn.Module, b: nn.Module, shape) -> bool:
    x = torch.randn(*shape)
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


# ---- zoo ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [28, 32, 224])
def test_small_resnet_runs_on_any_size_and_learns(size):
    torch.manual_seed(0)
    model = zoo.small_resnet(in_channels=3, num_classes=7)
    x = torch.randn(2, 3, size, size)
    loss = nn.functional.cross_entropy(model(x), torch.tensor([0, 6]))
    loss.backward()
    assert model(x).shape == (2, 7)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_small_resnet_residual_adds_couple_channels_for_pruning():
    import torch_pruning as tp

    model = zoo.small_resnet(widths=(8, 16, 32))
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 1, 28, 28))
    group = graph.get_pruning_group(model.stem[0], tp.prune_conv_out_channels, idxs=[0])
    coupled = {item.dep.target.module for item in group}
    # the stem's channel 0 is added to the first block's output: both convs producing it are coupled
    assert model.stages[0][0].conv2 in coupled
    assert model.stages[1][0].conv1 in coupled  # ...and the next stage reads it


def test_tiny_cnn_shape_and_blocks_per_stage():
    assert zoo.tiny_cnn(in_channels=3, num_classes=5)(torch.randn(2, 3, 28, 28)).shape == (2, 5)
    deep = zoo.small_resnet(blocks_per_stage=2)
    assert len(deep.stages[2]) == 2
    with pytest.raises(ValueError):
        zoo.small_resnet(widths=(8, 16))


# ---- model files -------------------------------------------------------------------------------


def test_torchvision_pickle_round_trips_with_weights_only(tmp_path):
    model = torchvision.models.resnet18(num_classes=10)
    torch.save(model, tmp_path / "model.pt")
    loaded = load_model(str(tmp_path / "model.pt"))
    assert type(loaded) is torchvision.models.ResNet and not loaded.training
    assert outputs_match(model, loaded, (1, 3, 32, 32))


def test_zoo_pickle_round_trips_through_save_model(tmp_path):
    model = zoo.small_resnet(widths=(8, 16, 32))
    path = save_model(model, tmp_path / "out" / "model.pt")
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temp file left behind
    assert outputs_match(model, load_model(str(path)), (2, 1, 28, 28))


def test_custom_class_is_refused_with_trust_pickle_hint(tmp_path):
    torch.save(CustomNet(), tmp_path / "custom.pt")
    with pytest.raises(UsageError, match="--trust-pickle") as err:
        load_model(str(tmp_path / "custom.pt"))
    assert "CustomNet" in str(err.value)


def test_trust_pickle_loads_custom_class_and_warns(tmp_path, caplog):
    model = CustomNet()
    torch.save(model, tmp_path / "custom.pt")
    with caplog.at_level(logging.WARNING, logger="catalyst_deploy.inputs.models"):
        loaded = load_model(str(tmp_path / "custom.pt"), trust_pickle=True)
    assert isinstance(loaded, CustomNet) and outputs_match(model, loaded, (3, 4))
    assert "runs any code" in caplog.text


def test_state_dict_file_as_spec_says_what_to_do(tmp_path):
    torch.save(zoo.tiny_cnn().state_dict(), tmp_path / "sd.pt")
    with pytest.raises(UsageError, match="holds a state_dict, not a model.*--weights"):
        load_model(str(tmp_path / "sd.pt"))


def test_missing_file_and_unreadable_file(tmp_path):
    with pytest.raises(UsageError, match="model file not found: .*nope.pt"):
        load_model(str(tmp_path / "nope.pt"))
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    with pytest.raises(UsageError, match="cannot read"):
        load_model(str(tmp_path / "junk.pt"))


# ---- builders ----------------------------------------------------------------------------------


def test_torchvision_spec_builds_untrained_model_with_num_classes():
    model = load_model("torchvision:resnet18", num_classes=10)
    assert model.fc.out_features == 10 and not model.training


def test_unknown_torchvision_name_suggests_the_closest():
    with pytest.raises(UsageError, match="unknown torchvision model 'resnet19'.*did you mean 'resnet18'"):
        load_model("torchvision:resnet19")


def test_zoo_alias_passes_num_classes_and_in_channels():
    model = load_model("zoo:small_resnet", num_classes=5, in_channels=3)
    assert isinstance(model, zoo.SmallResNet) and not model.training
    assert model(torch.randn(2, 3, 28, 28)).shape == (2, 5)
    assert model_input_channels(model) == 3
    with pytest.raises(UsageError, match="did you mean 'small_resnet'"):
        load_model("zoo:smal_resnet")


def test_factory_spec_passes_only_the_arguments_it_takes():
    tiny = load_model("catalyst_deploy.inputs.zoo:tiny_cnn", num_classes=4, in_channels=2)
    assert tiny(torch.randn(1, 2, 28, 28)).shape == (1, 4)
    plain = load_model(f"{__name__}:plain_factory", num_classes=4, in_channels=2)
    assert isinstance(plain, nn.Sequential)


def test_unknown_spec_forms_list_what_is_accepted():
    with pytest.raises(UsageError, match="no module named 'not_a_module_xyz'.*torchvision:NAME"):
        load_model("not_a_module_xyz:build")
    with pytest.raises(UsageError, match="did you mean 'torchvision:resnet18'"):
        load_model("resnet18")


def test_timm_spec_without_timm_names_the_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` fails as if it were not installed
    with pytest.raises(MissingDependency, match=r"pip install 'catalyst-deploy\[timm\]'"):
        load_model("timm:resnet18")


# ---- weights -----------------------------------------------------------------------------------


@pytest.mark.parametrize("wrap", ["ddp", "checkpoint"])
def test_state_dict_weights_load_with_ddp_prefix_or_checkpoint_dict(tmp_path, wrap):
    trained = zoo.tiny_cnn(num_classes=3)
    state = {f"module.{k}": v for k, v in trained.state_dict().items()}
    torch.save(state if wrap == "ddp" else {"epoch": 3, "state_dict": state}, tmp_path / "w.pt")
    loaded = load_model("zoo:tiny_cnn", num_classes=3, weights=tmp_path / "w.pt")
    assert outputs_match(trained, loaded, (2, 1, 28, 28))


def test_weights_that_do_not_fit_name_the_keys(tmp_path):
    torch.save(zoo.tiny_cnn().state_dict(), tmp_path / "w.pt")
    with pytest.raises(UsageError, match="missing keys.*stem.0.weight"):
        load_model("zoo:small_resnet", weights=tmp_path / "w.pt")
    fits_head_only = (r"2 shape mismatches \(fc.weight, fc.bias\); fc.weight is \(10, 64\) in the file.*"
                      r"the classifier has 10 outputs in the file and 5 in the model: the dataset has 5 classes; "
                      r"pass weights trained on the same classes, or a model spec whose head matches")
    with pytest.raises(UsageError, match=fits_head_only) as err:
        load_model("zoo:tiny_cnn", num_classes=5, weights=tmp_path / "w.pt")
    assert "--num-classes" not in str(err.value)  # prune has no such option: the dataset sets the count
    with pytest.raises(UsageError, match="weights file not found"):
        load_model("zoo:tiny_cnn", weights=tmp_path / "none.pt")


def test_model_input_channels():
    assert model_input_channels(torchvision.models.resnet18()) == 3
    assert model_input_channels(zoo.tiny_cnn(in_channels=1)) == 1
    assert model_input_channels(nn.Sequential(nn.Linear(3, 2))) is None


# ---- files that are not checkpoints, and refusals --------------------------------------------------


def unreadable_files(tmp_path) -> dict:
    """Name -> a file that is not a readable checkpoint, each with the reason the message should give."""
    torch.save(zoo.tiny_cnn().state_dict(), tmp_path / "good.pt")
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "notes.pt").write_text("epoch 3: accuracy 0.91\nnot a checkpoint\n")
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    return {"notes.pt": "it holds text", "empty.pt": "the file is empty",
            "cut.pt": "a truncated or damaged zip archive"}


@pytest.mark.parametrize("role", ["model", "weights"])
@pytest.mark.parametrize("name", ["notes.pt", "empty.pt", "cut.pt"])
def test_text_empty_or_truncated_file_gives_one_clear_line(tmp_path, name, role):
    reason = unreadable_files(tmp_path)[name]
    path = tmp_path / name
    with pytest.raises(UsageError) as err:
        if role == "model":
            load_model(str(path))
        else:
            load_model("zoo:tiny_cnn", weights=path)
    message = str(err.value)
    assert message == f"cannot read {path}: it is not a readable PyTorch checkpoint ({reason})"


def test_truncated_legacy_checkpoint_is_a_usage_error(tmp_path):
    torch.save(zoo.tiny_cnn().state_dict(), tmp_path / "w.pt", _use_new_zipfile_serialization=False)
    data = (tmp_path / "w.pt").read_bytes()
    (tmp_path / "w.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(UsageError, match=r"cannot read .*w.pt: it is not a readable PyTorch checkpoint \(.+\)"):
        load_model("zoo:tiny_cnn", weights=tmp_path / "w.pt")


class Opaque:
    """A non-tensor object outside the allowlist, as a checkpoint entry."""


@pytest.mark.parametrize(
    ("what", "container"), [("model", "legacy"), ("weights", "legacy"), ("weights", "zip")]
)
def test_refused_legacy_or_weights_pickle_names_the_class_and_trust_pickle(tmp_path, what, container):
    obj = CustomNet() if what == "model" else {"state_dict": zoo.tiny_cnn().state_dict(), "extra": Opaque()}
    torch.save(obj, tmp_path / "f.pt", _use_new_zipfile_serialization=container == "zip")
    with pytest.raises(UsageError) as err:
        if what == "model":
            load_model(str(tmp_path / "f.pt"))
        else:
            load_model("zoo:tiny_cnn", weights=tmp_path / "f.pt")
    message = str(err.value)
    assert ("CustomNet" if what == "model" else "Opaque") in message and "--trust-pickle" in message
    assert "\n" not in message and "weights_only" not in message  # torch's advice does not pass through
    if what == "weights":
        load_model("zoo:tiny_cnn", weights=tmp_path / "f.pt", trust_pickle=True)  # the way out works


def test_legacy_file_of_allowlisted_classes_says_legacy_format(tmp_path):
    torch.save(zoo.tiny_cnn(), tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(UsageError, match=r"legacy \(non-zip\) format.*--trust-pickle") as err:
        load_model(str(tmp_path / "old.pt"))
    assert "\n" not in str(err.value)
    assert isinstance(load_model(str(tmp_path / "old.pt"), trust_pickle=True), zoo.TinyCNN)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated, yet such files exist
def test_torchscript_file_says_what_it_is(tmp_path):
    torch.jit.save(torch.jit.script(nn.Linear(2, 2)), tmp_path / "ts.pt")
    with pytest.raises(UsageError, match="holds a TorchScript program"):
        load_model(str(tmp_path / "ts.pt"))


# ---- factories that fail -----------------------------------------------------------------------


def raising_factory(num_classes=10):
    """A factory that rejects its argument, as user code does."""
    raise ValueError(f"num_classes must be even, got {num_classes}\nsecond line")


def test_factory_that_raises_gives_one_line_naming_it():
    with pytest.raises(UsageError) as err:
        load_model(f"{__name__}:raising_factory", num_classes=3)
    assert str(err.value) == (
        f"model factory {__name__}:raising_factory raised ValueError: num_classes must be even, got 3"
    )


@pytest.mark.parametrize(
    ("source", "error"),
    [
        ("import not_installed_dep_xyz\n", "ModuleNotFoundError: No module named 'not_installed_dep_xyz'"),
        ("def build(:\n", "SyntaxError"),
        ("raise RuntimeError('no GPU here')\n", "RuntimeError: no GPU here"),
    ],
)
def test_factory_module_that_fails_to_import_gives_one_line(tmp_path, monkeypatch, source, error):
    name = f"broken_factories_{abs(hash(source))}"
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UsageError) as err:
        load_model(f"{name}:build")
    message = str(err.value)
    assert message.startswith(f"model spec '{name}:build': importing {name} failed: {error}")
    assert "\n" not in message
