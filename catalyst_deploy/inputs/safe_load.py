"""Reading pickled PyTorch files (``torch.save`` output) without running code from them.

``torch.load(weights_only=True)`` builds torch's tensors and containers plus :func:`safe_globals`:

* the nn.Module classes *defined in* (``cls.__module__``: imported names do not count) the packages of
  :data:`MODULE_SOURCES`: ``torch.nn.modules`` (the layers; the rest of torch.nn is wrappers:
  ``parallel``, ``utils`` parametrizations, ``cpp``, quantized aliases of torch.ao), ``torchvision.models``
  with helpers (``_utils.IntermediateLayerGetter``) but not ``feature_extraction`` (fx ``DualGraphModule``)
  or ``quantization``, ``torchvision.ops``' public modules (the zoo's blocks: ``Conv2dNormActivation``,
  ``SqueezeExcitation``, ``StochasticDepth``, ``FrozenBatchNorm2d``, ...), ``timm.models`` and
  ``timm.layers`` when installed (private modules such as ``_efficientnet_blocks`` too, fx ones not),
  this package's zoo and the stand-ins of ``surgery`` (``attention_modules``, ``shuffle_modules``);
* less every class whose unpickling could run code (:func:`unpickling_may_run_code`): a base from
  torch.fx, torch.ao, torch.jit or torch's private packages (a GraphModule's ``__reduce__`` regenerates
  Python source and runs it), a ``__reduce__``, ``__reduce_ex__`` or ``__new__`` other than ``object``'s,
  or a ``__setstate__`` not in :data:`REVIEWED_SETSTATE`;
* plus the few globals of :func:`_safe_other_globals` (why each is safe is written there).

Unpickling may call an allowlisted class (``__init__`` runs with arguments from the file); all it can
call is on the list too, so a file can make the loader allocate memory but not reach other code.
Anything else needs ``trust_pickle=True`` (``--trust-pickle``), which runs the file's code.
"""

from __future__ import annotations

import functools
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from catalyst_deploy.errors import UsageError

if TYPE_CHECKING:
    from torch import nn

log = logging.getLogger(__name__)

# (package, also walk its private submodules, subpackages left out)
MODULE_SOURCES = (
    ("torch.nn.modules", False, ()), ("torchvision.ops", False, ()), ("catalyst_deploy.inputs.zoo", False, ()),
    ("catalyst_deploy.surgery.attention_modules", False, ()), ("catalyst_deploy.surgery.shuffle_modules", False, ()),
    ("torchvision.models", True, ("torchvision.models.feature_extraction", "torchvision.models.quantization")))
OPTIONAL_MODULE_SOURCES = (("timm.models", True, ()), ("timm.layers", True, ()))
# Old homes of allowlisted modules: a zoo model's pruned.pt from before the layer folders names catalyst_deploy.zoo.
LEGACY_MODULES = {"catalyst_deploy.inputs.zoo": "catalyst_deploy.zoo"}
# A class with a base from one of these modules is never allowed, wherever it is defined.
BLOCKED_ORIGINS = re.compile(r"torch\.(fx|ao|jit|sparse|_\w*|nn\.(quantized|qat|quantizable|intrinsic|parallel))(\.|$)")
# __setstate__ methods read and found to only update __dict__ and set defaults for old files.
REVIEWED_SETSTATE = frozenset(f"torch.nn.modules.{name}" for name in (
    "module.Module", "conv._ConvNd", "activation.Softmax", "activation.Softmin", "activation.LogSoftmax",
    "activation.MultiheadAttention", "pooling.AvgPool3d", "rnn.RNNBase", "upsampling.Upsample",
    "transformer.TransformerEncoderLayer", "transformer.TransformerDecoderLayer"))


@functools.cache
def safe_module_classes() -> tuple[type, ...]:
    """The nn.Module classes unpickled without ``trust_pickle`` (see the module doc), sorted; cached."""
    import importlib.util
    import warnings

    from torch import nn

    sources = list(MODULE_SOURCES)
    sources += [s for s in OPTIONAL_MODULE_SOURCES if importlib.util.find_spec(s[0].partition(".")[0]) is not None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated aliases and the like, imported while walking
        modules = [m for name, *rules in sources for m in _walk(importlib.import_module(name), *rules)]
    classes = {value for module in modules for value in vars(module).values()
               if isinstance(value, type) and issubclass(value, nn.Module) and value.__module__ == module.__name__}
    return tuple(sorted((cls for cls in classes if not unpickling_may_run_code(cls)), key=_global_name))


def _walk(package, private: bool, left_out: tuple[str, ...]):
    """``package`` and its importable submodules but fx ones, ``left_out`` and (unless ``private``) _names."""
    import importlib
    import pkgutil

    yield package
    for info in pkgutil.iter_modules(getattr(package, "__path__", []), package.__name__ + "."):
        last = info.name.rpartition(".")[2]
        if info.name in left_out or "fx" in last.split("_") or (last.startswith("_") and not private):
            continue
        try:
            module = importlib.import_module(info.name)
        except Exception:  # noqa: BLE001 - a submodule whose optional dependency is missing
            continue
        yield from _walk(module, private, left_out)


def unpickling_may_run_code(cls: type) -> bool:
    """True when unpickling ``cls`` could run code beyond filling its ``__dict__`` (see the module doc)."""
    for klass in cls.__mro__:
        if klass is object:
            continue
        if BLOCKED_ORIGINS.match(klass.__module__):
            return True
        own = vars(klass)
        if any(hook in own for hook in ("__reduce__", "__reduce_ex__", "__new__")):
            return True
        if "__setstate__" in own and _global_name(klass) not in REVIEWED_SETSTATE:
            return True
    return False


def _safe_other_globals() -> list:
    """The non-module globals that saved models need, each safe to build and to call with any arguments."""
    import torch.nn.functional as F

    # functools.partial: torchvision's ViT, ConvNeXt, Swin, MaxViT and EfficientNet keep one as ``norm_layer``.
    # Unpickling a partial only builds it: partial(func), then __setstate__((func, args, kwargs, dict)) stores
    # the pieces (C code checks that func is callable); the unpickler never calls it (REDUCE takes only listed
    # globals). Its func and arguments are things the file could build anyway, so whatever model code later
    # calls it with is within what listed globals can do. (torchvision calls norm_layer only in __init__.)
    # F.relu, F.gelu: nn.TransformerEncoder/DecoderLayer keep their activation function; tensor math only.
    found = [functools.partial, F.relu, F.gelu]
    try:  # timm's ViTs, Swin, EVA... keep a Format (a str Enum, no custom _missing_): Format("NCHW") looks it up
        from timm.layers.format import Format
    except ImportError:  # no timm, or one too old to have it
        return found
    return [*found, Format]


def safe_globals() -> list:
    """The allowlist for ``torch.serialization.safe_globals``: module classes, a few functions, (class, old name) pairs."""
    classes = safe_module_classes()
    legacy = [(c, f"{LEGACY_MODULES[c.__module__]}.{c.__qualname__}") for c in classes if c.__module__ in LEGACY_MODULES]
    return [*classes, *_safe_other_globals(), *legacy]


@functools.cache
def safe_global_names() -> frozenset[str]:
    """Dotted names of :func:`safe_globals`, as ``get_unsafe_globals_in_checkpoint`` reports them."""
    return frozenset(obj[1] if isinstance(obj, tuple) else _global_name(obj) for obj in safe_globals())


def _global_name(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def load_model_file(path: str | Path, *, trust_pickle: bool = False) -> nn.Module:
    """Load a module saved with ``torch.save(model)``; only allowlisted globals unless ``trust_pickle``.

    Raises UsageError when the file is missing or not a readable checkpoint, holds a state dict or a
    TorchScript program rather than a module, or needs globals beyond the allowlist."""
    from torch import nn

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"model file not found: {path}")
    obj = load_checkpoint(path, trust_pickle=trust_pickle)
    if isinstance(obj, dict) and isinstance(obj.get("model"), nn.Module):
        obj = obj["model"]
    if isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, dict):
        raise UsageError(f"{path} holds a state_dict, not a model: pass the architecture as the spec, "
                         f"e.g. torchvision:resnet18 --weights {path}")
    raise UsageError(f"{path} holds a {type(obj).__name__}, not a torch nn.Module")


def load_checkpoint(path: Path, *, trust_pickle: bool) -> Any:
    """``torch.load`` ``path`` on the CPU: under the allowlist, or with ``weights_only=False`` when
    ``trust_pickle`` (logged as a warning). Raises UsageError for anything it cannot or may not read."""
    if trust_pickle:
        log.warning("--trust-pickle: loading %s with weights_only=False runs any code the file contains", path)
        return _torch_load(path, weights_only=False)
    _refuse_unsafe_globals(path)
    return _torch_load(path, weights_only=True)


def _refuse_unsafe_globals(path: Path) -> None:
    """Raise UsageError naming every global of a zip checkpoint beyond the allowlist. Only for the
    message: the weights_only load after it enforces the list, and judges what this scan cannot read."""
    import torch

    try:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as err:  # noqa: BLE001 - not a zip, truncated, opcodes it does not know: the load judges
        if "torchscript" in str(err).lower():  # a ValueError
            raise UsageError(f"{path} holds a TorchScript program (torch.jit.save), not an eager model or a state "
                             "dict: pass a file saved with torch.save, or the architecture with --weights") from None
        return
    if unsafe := sorted(set(needed) - safe_global_names()):
        raise _needs_trust_pickle(path, unsafe)


def _torch_load(path: Path, *, weights_only: bool) -> Any:
    """torch.load on the CPU under the allowlist; every failure becomes a one-line UsageError."""
    import pickle

    import torch

    try:
        with torch.serialization.safe_globals(safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as err:
        raise (_refused(path, err) if weights_only else _unreadable(path, err)) from None
    except (AttributeError, ImportError) as err:  # only with weights_only=False: a class it cannot find
        missing = _torch_reason(err)
        raise UsageError(f"{path} pickles a class that cannot be imported here ({missing}): make its module "
                         "importable, or save a state_dict and pass package.module:factory --weights FILE") from None
    except Exception as err:  # noqa: BLE001 - torch reports bad files as any of a dozen types
        raise _unreadable(path, err) from None


# ---- messages ------------------------------------------------------------------------------------

# How torch's weights_only unpickler (read in torch 2.14) names what it refused, one group each.
BLOCKED_GLOBAL_PATTERNS = (
    r"GLOBAL (\S+) was not an allowed global",  # a global beyond the allowlist
    r"unsupported GLOBAL (\S+) whose module \S+ is blocked",  # os, sys, posix, nt: never allowed
    r"allowlisted via `add_safe_globals`,? but got <class '([^']+)'>",  # NEWOBJ or BUILD on such a class
    r"reduce for unrecognized function ([^\n]+?)(?: which belongs to [^\n]*)?$",  # REDUCE on such a callable
)


def blocked_globals(message: str) -> list[str]:
    """The globals torch's weights_only UnpicklingError ``message`` says it refused, dotted ('builtins.eval')."""
    found = [m for pattern in BLOCKED_GLOBAL_PATTERNS for m in re.findall(pattern, message, flags=re.MULTILINE)]
    # torch drops the 'builtins.' of builtins (GLOBAL eval): every pickled global has a module
    return [name if "." in name or name.startswith("<") else f"builtins.{name}" for name in dict.fromkeys(found)]


def _needs_trust_pickle(path: Path, unsafe: list[str]) -> UsageError:
    outside = "torch.nn, torchvision, timm and catalyst_deploy.inputs.zoo"
    return UsageError(f"{path} needs classes or functions outside {outside} to load ({_few(unsafe, 6)}); "
                      "if you trust the file, pass --trust-pickle (it runs code from the file)")


def _refused(path: Path, err: BaseException) -> UsageError:
    """The tool's one-line message for a weights_only refusal; torch's advice never passes through."""
    text = str(err)
    if names := blocked_globals(text):
        return _needs_trust_pickle(path, names)
    if _content_hint(path):  # text, empty, truncated: say that rather than what torch tripped on
        return _unreadable(path, err)
    if "persistent_load" in text or "legacy .tar" in text:  # a module saved in a pre-zip format
        if unsafe := _legacy_unsafe_globals(path):  # torch stopped before naming them
            return _needs_trust_pickle(path, unsafe)
        return UsageError(f"{path} is in torch's legacy (non-zip) format, which stores module classes in a way only "
                          "--trust-pickle can read (it runs code from the file); or re-save it with torch.save(model)")
    return UsageError(f"{path} is not a plain PyTorch checkpoint ({_torch_reason(err)}): if you trust the file, "
                      "pass --trust-pickle (it runs code from the file)")


def _legacy_unsafe_globals(path: Path) -> list[str]:
    """Globals beyond torch's and ours in a legacy-format file, read by pickletools (which builds nothing)."""
    import pickletools
    from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING  # how Python 3 reads protocol 2's names

    try:
        from torch._weights_only_unpickler import _get_allowed_globals  # private: without it, name nothing
        with open(path, "rb") as file:  # magic number, protocol, sys info, then the saved object
            found = [arg for _ in range(4) for op, arg, _pos in pickletools.genops(file) if op.name == "GLOBAL"]
    except Exception:  # noqa: BLE001 - only for a message: the load has refused the file already
        return []
    pairs = [tuple(arg.split(" ", 1)) for arg in found]  # ('__builtin__', 'set') -> builtins.set
    names = {".".join(NAME_MAPPING.get(pair, (IMPORT_MAPPING.get(pair[0], pair[0]), pair[1]))) for pair in pairs}
    return sorted(names - safe_global_names() - set(_get_allowed_globals()))


def _unreadable(path: Path, err: BaseException) -> UsageError:
    reason = _content_hint(path) or _torch_reason(err)
    return UsageError(f"cannot read {path}: it is not a readable PyTorch checkpoint ({reason})")


def _content_hint(path: Path) -> str | None:
    """What is wrong with the file on sight: empty, text, a zip with no directory; None if nothing shows."""
    import zipfile

    try:
        with open(path, "rb") as file:
            head = file.read(4096)
    except OSError as err:
        return _torch_reason(err)
    if not head.strip(b"\0"):
        return "the file is empty" if not head else "the file holds only zero bytes"
    if head.startswith(b"PK\x03\x04") and not zipfile.is_zipfile(path):
        return "a truncated or damaged zip archive"
    text = head.decode("utf-8", errors="replace").rstrip("\ufffd")  # the read may cut a character in two
    textual = text and all((c.isprintable() or c.isspace()) and c != "\ufffd" for c in text)
    return "it holds text" if textual else None


def _torch_reason(err: BaseException) -> str:
    """The first line of ``err`` that is not torch's advice about weights_only (which misleads here)."""
    text = str(err).partition("WeightsUnpickler error:")[2] or str(err)
    advice = ("weights_only", "Weights only", "add_safe_globals", "file an issue", "documentation", "trust")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    useful = [line for line in lines if not any(a in line for a in advice)]
    if useful:
        return useful[0][:200]
    return "the file ends too soon: truncated?" if isinstance(err, EOFError) else type(err).__name__


def _few(names: list[str], shown: int = 4) -> str:
    """'a, b, c, d and 7 more'."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
