"""Sketch-style LoRA adapters: checked, loaded once, applied per job.

An adapter folder is what `flipsketch train-lora` writes and what peft saves:
`adapter_config.json` (a peft `LoraConfig`) and `adapter_model.safetensors`.
Single `.safetensors` files as people share them are read too (`read_lora_file`):
kohya-ss keys (`lora_unet_<module path, dots as _>.lora_down/lora_up.weight`
and `.alpha`), mapped back onto the UNet's own module names with kohya's naming
rule (diffusers' kohya conversion is written for the SD UNet2D and renames
UNet3D modules such as `transformer_in` or `temp_attentions` wrongly), and
diffusers' `pytorch_lora_weights.safetensors` (`unet.` prefix; peft `lora_A/B`
or the older `lora.down/up` and `to_q_lora` keys), converted with diffusers'
`convert_unet_state_dict_to_peft`; both get their peft `LoraConfig` from
diffusers' `get_peft_kwargs` (per-module rank and alpha).
Adapters are injected into the warm UNet with peft and stay there, keyed by
folder and file stamp, so a server switching between styles never reloads the
base model or an adapter it already holds. A job activates its adapters with
their weights; after it (and for jobs without LoRAs) the adapter layers are
disabled, which runs the base layers alone and so reproduces the base model's
output bit for bit. Adapter weights stay in float32 next to a bf16 base, as in
training, so an adapter gives the same frames in the trainer and in a job.

The module imports torch and peft only when an adapter is actually loaded:
`params` uses `LoraRef` and `check_folder` for request validation.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flipsketch.errors import InputError
from flipsketch.validation import MAX_PATH, FieldError, number, text

if TYPE_CHECKING:
    from flipsketch.models import SketchModel

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
KOHYA_PREFIX = "lora_unet_"
KOHYA_PARTS = {"lora_down.weight": "lora_A.weight", "lora_up.weight": "lora_B.weight"}
SUPPORTED = (
    "a LoRA folder (adapter_config.json + adapter_model.safetensors, as `flipsketch train-lora` writes), "
    "or one .safetensors file with kohya-ss UNet keys (lora_unet_….lora_down/lora_up.weight, .alpha) "
    "or diffusers keys (unet.….lora_A/lora_B.weight or ….lora.down/up.weight)"
)
MAX_LORAS = 8  # per job
MAX_WEIGHT = 4.0
CACHE_SIZE = 8  # adapters kept in a warm UNet


@dataclass(frozen=True)
class LoraRef:
    """One adapter of a job: its folder and how strongly it applies."""

    path: str
    weight: float = 1.0


def parse_loras(value: Any) -> list[LoraRef]:
    """LoRAs from JSON (`[{"path": ..., "weight": ...}]`), each problem named by index."""
    if not isinstance(value, list):
        raise InputError("Parameter 'loras' must be a list.", 'Send [{"path": "/folder/of/lora", "weight": 1.0}].')
    refs = []
    for index, entry in enumerate(value):
        if isinstance(entry, LoraRef):
            refs.append(entry)
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or set(entry) - {"path", "weight"}:
            raise FieldError(
                f"loras[{index}]",
                f"LoRA {index} must be an object with a 'path' string and an optional 'weight' number.",
                'Send {"path": "/folder/of/lora", "weight": 1.0}.',
            )
        path = text(f"loras[{index}].path", entry["path"], MAX_PATH, "LoRA")
        refs.append(LoraRef(path, weight(index, entry.get("weight", 1.0))))
    return refs


def weight(index: int, value: Any) -> float:
    """A LoRA's weight: a finite number within ±MAX_WEIGHT."""
    hint = f"Use a weight between -{MAX_WEIGHT:g} and {MAX_WEIGHT:g}."
    return number(f"loras[{index}].weight", value, -MAX_WEIGHT, MAX_WEIGHT, "LoRA", hint=hint)


def check_loras(refs: list[LoraRef]) -> list[Path]:
    """The resolved folders of a job's LoRAs; InputError for a list that cannot be applied."""
    if len(refs) > MAX_LORAS:
        raise FieldError("loras", f"A job names {len(refs)} LoRAs.", f"Use at most {MAX_LORAS}.")
    seen: dict[Path, None] = {}  # ordered, like the job's list
    for index, ref in enumerate(refs):
        weight(index, ref.weight)
        folder = check_folder(ref.path)
        if folder in seen:
            raise FieldError(
                f"loras[{index}]", f"LoRA '{ref.path}' is listed twice.", "List each LoRA once and set its weight."
            )
        seen[folder] = None
    return list(seen)


def check_folder(path: str | Path) -> Path:
    """The resolved adapter: a LoRA folder, or a single `.safetensors` file
    (`adapter_model.safetensors` inside a LoRA folder means the folder).
    InputError saying what is missing or which formats are supported."""
    if not str(path).strip():
        raise InputError("A LoRA has an empty path.", "Choose the folder written by `flipsketch train-lora`.")
    source = Path(path).expanduser()
    if source.is_file() and source.name == ADAPTER_WEIGHTS and (source.parent / ADAPTER_CONFIG).is_file():
        source = source.parent
    if source.is_file():
        if source.suffix.lower() != ".safetensors":
            raise InputError(
                f"LoRA file '{path}' is a '{source.suffix or 'extensionless'}' file, not .safetensors.",
                f"Supported: {SUPPORTED}. Convert pickled .ckpt/.pt/.bin LoRAs to .safetensors first.",
            )
        return source.resolve()
    if not source.is_dir():
        raise InputError(
            f"LoRA '{path}' does not exist on the machine that generates (neither a folder nor a file).",
            "Check the path; with a remote backend the LoRA must exist on the server.",
        )
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (source / name).is_file():
            raise InputError(
                f"'{path}' is not a LoRA folder: it has no {name}.",
                "Choose the folder written by `flipsketch train-lora` (or a peft LoRA adapter folder), "
                "or a single-file LoRA (.safetensors).",
            )
    return source.resolve()


def weights_file(source: Path) -> Path:
    """The file holding an adapter's weights: the file itself or the folder's."""
    return source if source.is_file() else source / ADAPTER_WEIGHTS


def fingerprint(source: Path) -> str:
    """SHA-256 of the adapter weights (recorded in run.json for reproducibility)."""
    digest = hashlib.sha256()
    with open(weights_file(source), "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _unknown_format(path: Path, found: str) -> InputError:
    return InputError(f"LoRA file '{path}' is not in a supported format: {found}.", f"Supported: {SUPPORTED}.")


def _kohya_to_peft(path: Path, state: dict[str, Any], modules: set[str]) -> tuple[dict[str, Any], dict[str, float]]:
    """kohya-ss keys -> peft keys on the UNet's module names, and alphas by module."""
    by_kohya_name = {KOHYA_PREFIX + name.replace(".", "_"): name for name in modules}
    weights, alphas = {}, {}
    for key, value in state.items():
        base, _, part = key.partition(".")
        module = by_kohya_name.get(base)
        if module is None:
            raise _bad_adapter(path, f"'{base}' names no module of this UNet ({len(state)} keys; kohya-ss format)")
        if part == "alpha":
            alphas[f"{module}.alpha"] = float(value)
        elif part in KOHYA_PARTS:
            weights[f"{module}.{KOHYA_PARTS[part]}"] = value
        else:
            raise _unknown_format(path, f"kohya-ss key '{key}' is not a plain LoRA (LoCon/LoHa/LoKr parts)")
    return weights, alphas


def read_lora_file(path: Path, modules: set[str]) -> tuple[Any, dict[str, Any]]:
    """A single-file LoRA -> (peft LoraConfig, peft state dict on UNet module names).

    `modules` are the UNet's module names (`named_modules`). Raises InputError
    for unreadable files, formats other than kohya-ss and diffusers UNet LoRAs
    (naming what was found), and keys that name no module of this UNet."""
    from diffusers.utils.peft_utils import get_peft_kwargs
    from diffusers.utils.state_dict_utils import convert_unet_state_dict_to_peft
    from peft import LoraConfig
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise InputError(
            f"LoRA file '{path}' cannot be read as safetensors ({exc}).",
            "The file is damaged or incomplete: download or copy it again.",
        ) from None
    if not state:
        raise _unknown_format(path, "it holds no tensors")
    keys = sorted(state)
    if any(k.startswith(("lora_te", "text_encoder.", "te_")) for k in keys):
        raise _unknown_format(path, "it has text-encoder weights, and only UNet LoRAs apply to this model")
    if all(k.startswith(KOHYA_PREFIX) for k in keys):
        weights, alphas = _kohya_to_peft(path, state, modules)
    elif all(k.startswith("unet.") or ".lora" in k or "_lora." in k for k in keys):
        plain = {k.removeprefix("unet.").removeprefix("base_model.model."): v for k, v in state.items()}
        alphas = {k: float(v) for k, v in plain.items() if k.endswith(".alpha")}
        weights = convert_unet_state_dict_to_peft({k: v for k, v in plain.items() if not k.endswith(".alpha")})
        if not all(k.endswith((".lora_A.weight", ".lora_B.weight")) for k in weights):
            example = next(k for k in weights if not k.endswith((".lora_A.weight", ".lora_B.weight")))
            raise _unknown_format(path, f"diffusers-style key '{example}' is not a LoRA weight")
    else:
        raise _unknown_format(path, f"keys such as '{keys[0]}'")
    ranks = {k: v.shape[1] for k, v in weights.items() if k.endswith("lora_B.weight")}
    kwargs = get_peft_kwargs(ranks, alphas, weights, is_unet=True)
    return LoraConfig(**kwargs), weights


def _stamp(folder: Path) -> tuple[str, int, int]:
    """Cache key: a retrained adapter in the same folder is a different adapter."""
    stat = weights_file(folder).stat()
    return str(folder), stat.st_mtime_ns, stat.st_size


def tuner_layers(unet: Any) -> list[Any]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in unet.modules() if isinstance(m, BaseTunerLayer)]


def inject(unet: Any, config: Any, name: str) -> None:
    """Add adapter `name` to the UNet, its weights in float32 whatever the base dtype."""
    import peft.functional as peft_fn

    with warnings.catch_warnings():  # several adapters in one model are what we want
        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
        peft_fn.inject_adapter_in_model(config, unet, adapter_name=name)
    peft_fn.cast_adapter_dtype(unet, name)


def use_only(unet: Any, names: list[str], trainable: bool = False) -> None:
    """Exactly these adapters take part in the forward pass; frozen unless training."""
    import peft.functional as peft_fn

    for layer in tuner_layers(unet):
        layer.enable_adapters(True)
    peft_fn.set_adapter(unet, names, inference_mode=not trainable)


def _read_folder(folder: Path) -> tuple[Any, dict[str, Any]]:
    """A LoRA folder -> (peft LoraConfig, state dict as peft saved it)."""
    from peft import LoraConfig
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        config = LoraConfig.from_pretrained(str(folder))
    except (OSError, ValueError, TypeError, json.JSONDecodeError) as exc:
        raise _bad_adapter(folder, f"{ADAPTER_CONFIG} is not a LoRA configuration ({exc})") from None
    try:
        state = load_file(str(folder / ADAPTER_WEIGHTS))
    except (OSError, SafetensorError) as exc:
        raise InputError(
            f"LoRA weights '{folder / ADAPTER_WEIGHTS}' cannot be read ({exc}).",
            "The file is damaged or incomplete: copy or train the LoRA again.",
        ) from None
    return config, state


def _bad_adapter(folder: Path, problem: str) -> InputError:
    return InputError(
        f"LoRA '{folder}' cannot be applied to this model: {problem}.",
        "Use a LoRA trained on the same base model (see its run.json), or train one with `flipsketch train-lora`.",
    )


class LoraCache:
    """The adapters injected into one UNet, least recently used evicted first."""

    def __init__(self, unet: Any, capacity: int = CACHE_SIZE) -> None:
        self.unet = unet
        self.capacity = capacity
        self.loaded: OrderedDict[tuple[str, int, int], dict[str, str]] = OrderedDict()
        self._counter = 0

    def _new_name(self) -> str:
        self._counter += 1
        return f"lora{self._counter}"

    def adopt(self, folder: Path, name: str) -> None:
        """Record an adapter already in the UNet (the trainer's) as the one saved
        in `folder`, so jobs naming that folder use it without reloading."""
        folder = check_folder(folder)
        self.loaded[_stamp(folder)] = {"name": name, "sha256": fingerprint(folder)}

    def load(self, folder: Path) -> dict[str, str]:
        """Inject the adapter in `folder` (a LoRA folder or a single file) unless it is already in the UNet."""
        key = _stamp(folder)
        if key in self.loaded:
            self.loaded.move_to_end(key)
            return self.loaded[key]
        config, state = (
            read_lora_file(folder, {name for name, _ in self.unet.named_modules()})
            if folder.is_file()
            else _read_folder(folder)
        )
        for stale in [k for k in self.loaded if k[0] == key[0]]:  # an older version of this folder
            self.evict(stale)
        while len(self.loaded) >= self.capacity:
            self.evict(next(iter(self.loaded)))
        name = self._new_name()
        self._inject(folder, config, state, name)
        self.loaded[key] = {"name": name, "sha256": fingerprint(folder)}
        return self.loaded[key]

    def _inject(self, folder: Path, config: Any, state: dict[str, Any], name: str) -> None:
        from peft import set_peft_model_state_dict

        try:
            inject(self.unet, config, name)
            result = set_peft_model_state_dict(self.unet, state, adapter_name=name)
        except (ValueError, RuntimeError) as exc:
            self._remove(name)
            lines = [line.strip() for line in str(exc).strip().splitlines()] or [type(exc).__name__]
            raise _bad_adapter(folder, next((x for x in lines if "size mismatch" in x), lines[0])[:300]) from None
        missing = [k for k in result.missing_keys if f".{name}." in k]
        if result.unexpected_keys or missing:
            self._remove(name)
            example = (result.unexpected_keys or missing)[0]
            raise _bad_adapter(folder, f"{len(result.unexpected_keys) + len(missing)} weights do not match ({example})")

    def _remove(self, name: str) -> None:
        import peft.functional as peft_fn

        with warnings.catch_warnings():  # peft warns when the active adapter goes; none is active between jobs
            warnings.simplefilter("ignore", UserWarning)
            peft_fn.delete_adapter(self.unet, name, prefix="lora_")
        if name in getattr(self.unet, "peft_config", {}):
            del self.unet.peft_config[name]

    def evict(self, key: tuple[str, int, int]) -> None:
        self._remove(self.loaded.pop(key)["name"])

    def drop(self, name: str) -> None:
        """Remove adapter `name` from the UNet and forget every folder mapped to it."""
        for key in [k for k, v in self.loaded.items() if v["name"] == name]:
            del self.loaded[key]
        self._remove(name)

    def activate(self, names: list[str], weights: list[float]) -> None:
        """Only these adapters, at these weights, take part in the forward pass.
        Frozen: alignment's backward must not reach adapter weights."""
        use_only(self.unet, names)
        for layer in tuner_layers(self.unet):
            for name, weight in zip(names, weights, strict=True):
                layer.set_scale(name, weight)

    def deactivate(self) -> None:
        for layer in tuner_layers(self.unet):
            layer.enable_adapters(False)


def lora_cache(model: SketchModel) -> LoraCache:
    """The model's adapter cache, created on first use."""
    if model.loras is None:
        model.loras = LoraCache(model.unet)
    return model.loras


@contextmanager
def applied_loras(model: SketchModel, refs: list[LoraRef]) -> Iterator[list[dict[str, Any]]]:
    """Run the body with exactly `refs` applied; yields what run.json records.

    With no refs and no adapter ever loaded this touches nothing."""
    if not refs and model.loras is None:
        yield []
        return
    cache = lora_cache(model)
    entries = [(ref, cache.load(folder)) for ref, folder in zip(refs, check_loras(refs), strict=True)]
    if entries:
        cache.activate([e["name"] for _, e in entries], [ref.weight for ref, _ in entries])
    else:
        cache.deactivate()
    try:
        yield [{"path": ref.path, "weight": ref.weight, "sha256": e["sha256"]} for ref, e in entries]
    finally:
        cache.deactivate()
