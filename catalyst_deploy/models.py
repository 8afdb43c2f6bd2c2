"""Model specs: what ``--model`` accepts, turned into an ``nn.Module`` in eval mode on the CPU.

    load_model("model.pt")                                  # a whole pickled module, torch.save(model)
    load_model("torchvision:resnet18", weights="sd.pt")     # architecture + state dict
    load_model("timm:resnet50", num_classes=10)             # needs timm
    load_model("zoo:small_resnet", in_channels=1)           # catalyst_deploy.zoo:small_resnet
    load_model("my_pkg.nets:build", num_classes=100)        # any importable factory

Pickled files are read with ``weights_only=True`` against an allowlist of the module classes of
torch.nn, torchvision, timm (when installed) and :mod:`catalyst_deploy.zoo`; anything else needs
``trust_pickle=True``, which runs code from the file. Weights are never downloaded.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catalyst_deploy.errors import MissingDependency, UsageError, did_you_mean

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)

ACCEPTED_SPECS = (
    "a file saved with torch.save(model) (e.g. model.pt), torchvision:NAME, timm:NAME, "
    "zoo:NAME, or package.module:factory"
)
MODEL_FILE_SUFFIXES = (".pt", ".pth", ".pkl", ".ckpt", ".bin")
# Packages whose nn.Module classes may be unpickled without --trust-pickle (walked recursively).
SAFE_MODULE_PACKAGES = ("torch.nn", "torchvision.models", "torchvision.ops", "catalyst_deploy.zoo")
OPTIONAL_SAFE_MODULE_PACKAGES = ("timm",)
ZOO_MODULE = "catalyst_deploy.zoo"


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
        load_weights(model, weights, trust_pickle=trust_pickle)
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
        raise MissingDependency("timm is not installed: pip install timm") from None
    known = timm.list_models()
    if name.partition(".")[0] not in known:  # names may carry a pretrained tag: resnet50.a1_in1k
        raise UsageError(f"unknown timm model {name!r}{did_you_mean(name, known)}")
    kwargs = {} if num_classes is None else {"num_classes": num_classes}
    return timm.create_model(name, pretrained=False, **kwargs)


def build_from_factory(
    module_name: str, factory_name: str, *, num_classes: int | None = None, in_channels: int | None = None
) -> nn.Module:
    """Import ``module_name`` and call ``factory_name``, passing num_classes/in_channels when it accepts them.

    Raises UsageError when the module or the factory does not exist or the factory returns no nn.Module.
    """
    import importlib

    from torch import nn

    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and (module_name == err.name or module_name.startswith(err.name + ".")):
            hint = did_you_mean(module_name, ("torchvision", "timm", "zoo"))
            raise UsageError(
                f"unknown model spec '{module_name}:{factory_name}': no module named {err.name!r}{hint}; "
                f"expected {ACCEPTED_SPECS}"
            ) from None
        raise
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        public = getattr(module, "__all__", None) or [n for n, v in vars(module).items() if callable(v)]
        raise UsageError(f"{module_name} has no factory {factory_name!r}{did_you_mean(factory_name, public)}")
    model = factory(**_accepted_kwargs(factory, num_classes=num_classes, in_channels=in_channels))
    if not isinstance(model, nn.Module):
        raise UsageError(f"{module_name}:{factory_name} returned {type(model).__name__}, not a torch nn.Module")
    return model


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


# ---- whole-module files --------------------------------------------------------------------------


def load_model_file(path: str | Path, *, trust_pickle: bool = False) -> nn.Module:
    """Load a module saved with ``torch.save(model)``.

    Without ``trust_pickle`` only allowlisted classes (see :func:`safe_module_classes`) may be in
    the file. Raises UsageError when the file is missing, unreadable, holds a state dict or a
    TorchScript program rather than a module, or needs classes beyond the allowlist.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"model file not found: {path}")
    if trust_pickle:
        log.warning("--trust-pickle: loading %s with weights_only=False runs any code the file contains", path)
        obj = _torch_load(path, weights_only=False)
    else:
        _refuse_unsafe_globals(path)
        obj = _torch_load(path, weights_only=True)
    return _module_from_checkpoint(obj, path)


def _refuse_unsafe_globals(path: Path) -> None:
    """Raise UsageError listing the globals the file needs beyond the allowlist (if it can tell)."""
    import torch

    try:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except ValueError as err:
        if "torchscript" in str(err).lower():
            raise UsageError(
                f"{path} holds a TorchScript program, not an eager model: pass the file saved with "
                "torch.save(model), or the architecture as the spec with --weights"
            ) from None
        return  # not a zip checkpoint (legacy format or junk): the weights_only load decides
    unsafe = sorted(set(needed) - safe_global_names())
    if unsafe:
        raise _needs_trust_pickle(path, unsafe)


def _needs_trust_pickle(path: Path, unsafe: list[str]) -> UsageError:
    return UsageError(
        f"{path} needs classes outside torch/torchvision/timm/catalyst_deploy.zoo to load ({_few(unsafe, 6)}); "
        "if you trust the file, pass --trust-pickle (it runs code from the file)"
    )


def _torch_load(path: Path, *, weights_only: bool) -> Any:
    """torch.load on the CPU under the allowlist; unreadable files become UsageError."""
    import pickle

    import torch

    try:
        with torch.serialization.safe_globals(safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as err:
        unsafe = re.findall(r"GLOBAL ([\w.]+) was not an allowed global", str(err))
        if unsafe:
            raise _needs_trust_pickle(path, unsafe) from None
        if "persistent_load" in str(err):  # torch.save(..., _use_new_zipfile_serialization=False)
            raise UsageError(
                f"{path} is in torch's legacy (non-zip) format, which only --trust-pickle can read "
                "(it runs code from the file); or re-save it with torch.save(model)"
            ) from None
        raise UsageError(f"cannot read {path} with torch.load: {_first_line(err)}") from None
    except (AttributeError, ImportError) as err:  # only with weights_only=False: a class it cannot find
        raise UsageError(
            f"{path} pickles a class that cannot be imported here ({_first_line(err)}): make its module "
            "importable, or save a state_dict and pass package.module:factory --weights FILE"
        ) from None
    except (RuntimeError, KeyError, EOFError, OSError, ValueError) as err:
        raise UsageError(f"cannot read {path} with torch.load: {_first_line(err)}") from None


def _few(names: list[str], shown: int = 4) -> str:
    """'a, b, c, d and 7 more'."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _module_from_checkpoint(obj: Any, path: Path) -> nn.Module:
    """The nn.Module in a loaded file: the object itself or a checkpoint dict's ``model`` entry."""
    from torch import nn

    if isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, dict) and isinstance(obj.get("model"), nn.Module):
        return obj["model"]
    if isinstance(obj, dict):
        raise UsageError(
            f"{path} holds a state_dict, not a model: pass the architecture as the spec, "
            f"e.g. torchvision:resnet18 --weights {path}"
        )
    raise UsageError(f"{path} holds a {type(obj).__name__}, not a torch nn.Module")


@functools.cache
def safe_module_classes() -> tuple[type, ...]:
    """Every nn.Module subclass defined in :data:`SAFE_MODULE_PACKAGES` (and timm, when installed).

    Found by importing each package's submodules; the result is cached.
    """
    import importlib.util

    roots = list(SAFE_MODULE_PACKAGES)
    roots += [name for name in OPTIONAL_SAFE_MODULE_PACKAGES if importlib.util.find_spec(name) is not None]
    classes: set[type] = set()
    for root in roots:
        classes.update(_module_classes_under(root))
    return tuple(sorted(classes, key=_global_name))


def _module_classes_under(package_name: str) -> set[type]:
    """nn.Module subclasses found in ``package_name`` and all its importable submodules."""
    import importlib
    import pkgutil
    import warnings

    from torch import nn

    package = importlib.import_module(package_name)
    modules = [package]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated torch.nn.quantized aliases and the like
        for info in pkgutil.walk_packages(getattr(package, "__path__", []), package_name + ".", onerror=lambda _: None):
            try:
                modules.append(importlib.import_module(info.name))
            except Exception:  # noqa: BLE001 - a submodule with a missing optional dependency
                continue
    return {
        value
        for module in modules
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, nn.Module)
    }


def safe_globals() -> list:
    """The allowlist handed to ``torch.serialization.safe_globals``.

    Module classes plus ``functools.partial``, which torchvision's ViT/Swin/ConvNeXt keep as a
    ``norm_layer`` attribute; unpickling a partial only wraps an already-allowlisted callable.
    """
    return [*safe_module_classes(), functools.partial]


@functools.cache
def safe_global_names() -> frozenset[str]:
    """Dotted names of :func:`safe_globals`, as ``get_unsafe_globals_in_checkpoint`` reports them."""
    return frozenset(_global_name(obj) for obj in safe_globals())


def _global_name(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


# ---- weights, channels, saving -------------------------------------------------------------------


def load_weights(model: nn.Module, path: str | Path, *, trust_pickle: bool = False) -> None:
    """Load a state dict file into ``model`` in place.

    Accepts a raw state dict, a dict holding one under ``state_dict`` or ``model``, or a whole
    saved module (its state dict is used); strips the ``module.`` (DDP) and ``_orig_mod.``
    (torch.compile) prefixes. The file is read with ``weights_only=True`` unless ``trust_pickle``.
    Raises UsageError when the file is missing or unreadable, or its keys or shapes do not match.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UsageError(f"weights file not found: {path}")
    state = _state_dict_from_checkpoint(_torch_load(path, weights_only=not trust_pickle), path)
    mismatch = _describe_state_dict_mismatch(model.state_dict(), state)
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


def _describe_state_dict_mismatch(expected: dict, given: dict) -> str:
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
            parts.append("is --num-classes right?")
    return "; ".join(parts)


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
