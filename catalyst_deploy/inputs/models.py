"""Model specs: what ``--model`` accepts, turned into an ``nn.Module`` in eval mode on the CPU.

    load_model("model.pt")                                  # a whole pickled module, torch.save(model)
    load_model("torchvision:resnet18", weights="sd.pt")     # architecture + state dict
    load_model("timm:resnet50", num_classes=10)             # needs timm
    load_model("zoo:small_resnet", in_channels=1)           # catalyst_deploy.inputs.zoo:small_resnet
    load_model("my_pkg.nets:build", num_classes=100)        # any importable factory

Pickled files (models and weights) are read by :mod:`catalyst_deploy.inputs.safe_load`, with
``weights_only=True`` against a narrow allowlist of module classes (see there); anything else needs
``trust_pickle=True``, which runs code from the file. Weights are never downloaded.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catalyst_deploy.errors import CatalystDeployError, MissingDependency, UsageError, did_you_mean
from catalyst_deploy.inputs.safe_load import _few, load_checkpoint, load_model_file, safe_globals, safe_module_classes

if TYPE_CHECKING:
    from torch import nn

__all__ = [  # load_model_file, safe_globals and safe_module_classes live in safe_load, re-exported here
    "build_from_factory", "build_timm_model", "build_torchvision_model", "load_model", "load_model_file",
    "load_weights", "model_input_channels", "safe_globals", "safe_module_classes", "save_model",
]

ACCEPTED_SPECS = (
    "a file saved with torch.save(model) (e.g. model.pt), torchvision:NAME, timm:NAME, "
    "zoo:NAME, or package.module:factory"
)
MODEL_FILE_SUFFIXES = (".pt", ".pth", ".pkl", ".ckpt", ".bin")
ZOO_MODULE = "catalyst_deploy.inputs.zoo"


def load_model(
    spec: str,
    *,
    weights: str | Path | None = None,
    trust_pickle: bool = False,
    num_classes: int | None = None,
    in_channels: int | None = None,
) -> nn.Module:
    """Build or load the model that ``spec`` names; return it in eval mode on the CPU.

    ``weights`` is a state dict file loaded into the model (``module.`` prefixes stripped).
    ``num_classes`` goes to torchvision/timm builders and, like ``in_channels``, to factories that
    accept it; torchvision/timm models keep their 3-channel stem and a pickled model file is
    returned as saved: use :func:`model_input_channels` to convert the data instead.
    Raises UsageError on a bad spec, a missing or unreadable file, a file that needs
    ``trust_pickle``, or weights that do not fit; MissingDependency when timm is needed but absent.
    """
    model = _build_model(spec, trust_pickle=trust_pickle, num_classes=num_classes, in_channels=in_channels)
    if weights is not None:
        load_weights(model, weights, trust_pickle=trust_pickle, num_classes=num_classes)
    return model.to("cpu").eval()


def _build_model(spec: str, *, trust_pickle: bool, num_classes: int | None, in_channels: int | None) -> nn.Module:
    """Dispatch on the spec's form (file, prefix:name, module:factory)."""
    path = Path(spec).expanduser()
    if path.is_file():
        return load_model_file(path, trust_pickle=trust_pickle)
    if path.is_dir():
        raise UsageError(f"model spec {spec!r} is a folder: pass a model file or one of: {ACCEPTED_SPECS}")
    prefix, sep, name = spec.partition(":")
    if sep and prefix == "torchvision":
        return build_torchvision_model(name, num_classes=num_classes)
    if sep and prefix == "timm":
        return build_timm_model(name, num_classes=num_classes)
    if sep and prefix == "zoo":
        return build_from_factory(ZOO_MODULE, name, num_classes=num_classes, in_channels=in_channels)
    if _looks_like_path(spec):
        raise UsageError(f"model file not found: {spec}")
    if sep and re.fullmatch(r"[A-Za-z_][\w.]*", prefix) and name:
        return build_from_factory(prefix, name, num_classes=num_classes, in_channels=in_channels)
    raise UsageError(f"unknown model spec {spec!r}{_bare_name_hint(spec)}: expected {ACCEPTED_SPECS}")


def _looks_like_path(spec: str) -> bool:
    return spec.lower().endswith(MODEL_FILE_SUFFIXES) or "/" in spec or "\\" in spec


def _bare_name_hint(spec: str) -> str:
    """' (did you mean torchvision:NAME?)' when a bare architecture name was given."""
    import torchvision

    if spec.lower() in torchvision.models.list_models():
        return f" (did you mean 'torchvision:{spec.lower()}'?)"
    return ""


# ---- builders ------------------------------------------------------------------------------------


def build_torchvision_model(name: str, *, num_classes: int | None = None) -> nn.Module:
    """``torchvision.models.get_model(name, weights=None)``: random init, nothing downloaded.

    Raises UsageError for a name torchvision does not know, with the closest known name.
    """
    import torchvision

    known = torchvision.models.list_models()
    if name.lower() not in known:
        raise UsageError(f"unknown torchvision model {name!r}{did_you_mean(name.lower(), known)}")
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    return torchvision.models.get_model(name.lower(), weights=None, **kwargs)


def build_timm_model(name: str, *, num_classes: int | None = None) -> nn.Module:
    """``timm.create_model(name, pretrained=False)``: random init, nothing downloaded.

    Raises MissingDependency when timm is not installed, UsageError for a name timm does not know.
    """
    try:
        import timm
    except ImportError:
        raise MissingDependency("timm is not installed: pip install 'catalyst-deploy[timm]'") from None
    known = timm.list_models()
    if name.partition(".")[0] not in known:  # names may carry a pretrained tag: resnet50.a1_in1k
        raise UsageError(f"unknown timm model {name!r}{did_you_mean(name, known)}")
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    return timm.create_model(name, pretrained=False, **kwargs)


def build_from_factory(
    module_name: str, factory_name: str, *, num_classes: int | None = None, in_channels: int | None = None
) -> nn.Module:
    """Import ``module_name`` and call ``factory_name``, passing num_classes/in_channels when it accepts them.

    Raises UsageError when the module does not exist or fails to import, when the factory does not
    exist or raises, or when it returns no nn.Module; each as one line naming the spec.
    """
    from torch import nn

    module = _import_factory_module(module_name, factory_name)
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        public = getattr(module, "__all__", None) or [n for n, v in vars(module).items() if callable(v)]
        raise UsageError(f"{module_name} has no factory {factory_name!r}{did_you_mean(factory_name, public)}")
    try:
        model = factory(**_accepted_kwargs(factory, num_classes=num_classes, in_channels=in_channels))
    except CatalystDeployError:
        raise  # already one line for the user
    except Exception as err:  # the user's code: its error, in one line, is the message
        raise UsageError(f"model factory {module_name}:{factory_name} raised {_one_line(err)}") from err
    if not isinstance(model, nn.Module):
        raise UsageError(f"{module_name}:{factory_name} returned {type(model).__name__}, not a torch nn.Module")
    return model


def _import_factory_module(module_name: str, factory_name: str):
    """``importlib.import_module(module_name)``; UsageError when it is missing or fails to import."""
    import importlib

    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and (module_name == err.name or module_name.startswith(err.name + ".")):
            hint = did_you_mean(module_name, ("torchvision", "timm", "zoo"))
            raise UsageError(
                f"unknown model spec '{module_name}:{factory_name}': no module named {err.name!r}{hint}; "
                f"expected {ACCEPTED_SPECS}"
            ) from None
        failure = err  # the module exists but imports one that does not
    except Exception as err:  # noqa: BLE001 - a SyntaxError or any error raised while the module runs
        failure = err
    raise UsageError(
        f"model spec '{module_name}:{factory_name}': importing {module_name} failed: {_one_line(failure)}"
    ) from failure


def _one_line(err: BaseException) -> str:
    """'ValueError: first line of the message'."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def _accepted_kwargs(factory, **kwargs: Any) -> dict[str, Any]:
    """The non-None ``kwargs`` that ``factory``'s signature takes (all of them if it has ``**kwargs``)."""
    given = {k: v for k, v in kwargs.items() if v is not None}
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return given
    return {k: v for k, v in given.items() if k in params}


# ---- weights, channels, saving -------------------------------------------------------------------


def load_weights(
    model: nn.Module, path: str | Path, *, trust_pickle: bool = False, num_classes: int | None = None
) -> None:
    """Load a state dict file into ``model`` in place.

    Accepts a raw state dict, a dict holding one under ``state_dict`` or ``model``, or a whole
    saved module (its state dict is used); strips the ``module.`` (DDP) and ``_orig_mod.``
    (torch.compile) prefixes. The file is read under the allowlist unless ``trust_pickle`` (see
    :mod:`catalyst_deploy.inputs.safe_load`). ``num_classes``, when given, is the class count the model was
    built for (the dataset's), named in the hint when only the classifier does not fit.
    Raises UsageError when the file is missing or unreadable, or its keys or shapes do not match.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(f"weights file not found: {path}")
    state = _state_dict_from_checkpoint(load_checkpoint(path, trust_pickle=trust_pickle), path)
    mismatch = _describe_state_dict_mismatch(model.state_dict(), state, num_classes)
    if mismatch:
        raise UsageError(f"{path} does not fit the model: {mismatch}")
    model.load_state_dict(state)


def _state_dict_from_checkpoint(obj: Any, path: Path) -> dict:
    """The tensor mapping in a loaded weights file, with wrapper prefixes removed."""
    import torch

    if isinstance(obj, dict):
        wrapped = [obj[key] for key in ("state_dict", "model") if isinstance(obj.get(key), (dict, torch.nn.Module))]
        obj = wrapped[0] if wrapped else obj
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UsageError(f"{path} is not a state dict (a mapping of parameter names to tensors)")
    return _strip_wrapper_prefixes(obj)


def _strip_wrapper_prefixes(state: dict) -> dict:
    """Drop a ``module.`` (DDP/DataParallel) or ``_orig_mod.`` (torch.compile) prefix that every key has."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in ("module.", "_orig_mod."):
            if state and all(key.startswith(prefix) for key in state):
                state = {key[len(prefix) :]: value for key, value in state.items()}
                stripped = True
    return state


def _describe_state_dict_mismatch(expected: dict, given: dict, num_classes: int | None = None) -> str:
    """'' when ``given`` fits ``expected`` key for key and shape for shape, else what differs (a few names each)."""
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    resized = [k for k in expected if k in given and given[k].shape != expected[k].shape]
    labelled = (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", resized))
    parts = [f"{len(keys)} {label} ({_few(keys)})" for label, keys in labelled if keys]
    if resized:
        key = resized[0]
        parts.append(f"{key} is {tuple(given[key].shape)} in the file, {tuple(expected[key].shape)} in the model")
        head = next(reversed(expected)).rpartition(".")[0]  # the last layer: usually the classifier
        if not missing and not unexpected and all(k.startswith(head + ".") for k in resized):
            parts.append(_head_hint(given[key].shape[0], expected[key].shape[0], num_classes))
    return "; ".join(parts)


def _head_hint(in_file: int, in_model: int, num_classes: int | None) -> str:
    """Why only the classifier differs. ``prune`` has no --num-classes: the count comes from the dataset."""
    data = f": the dataset has {num_classes} classes" if num_classes == in_model else ""
    return (f"the classifier has {in_file} outputs in the file and {in_model} in the model{data}; pass weights "
            "trained on the same classes, or a model spec whose head matches")


def model_input_channels(model: nn.Module) -> int | None:
    """``in_channels`` of the model's first Conv2d in module order, or None when it has none.

    The data side uses it to repeat grayscale to 3 channels (or average colour to 1) rather than
    change the model.
    """
    from torch import nn

    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return None if first_conv is None else first_conv.in_channels


def save_model(model: nn.Module, path: str | Path) -> Path:
    """``torch.save(model, path)`` atomically; returns the path. A crash mid-write leaves any earlier file
    at ``path`` intact."""
    from catalyst_deploy.atomic import torch_save

    return torch_save(model, path)
