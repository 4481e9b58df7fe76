"""Loading the FlipSketch model components from a folder or a Hugging Face id.

A user's download and the tiny test model go through the same function, so
the tests exercise the code a real user runs. Loading is separate from the
sampler: the pipeline receives ready components, never builds them.
"""

from __future__ import annotations

import json
import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flipsketch import PUBLISHED_MODEL, PUBLISHED_SUBFOLDER
from flipsketch.errors import ModelCorruptError, ModelNotFoundError

if TYPE_CHECKING:
    import torch

# Component folder -> (library, class) exactly as in the published model_index.json.
COMPONENTS: dict[str, tuple[str, str]] = {
    "unet": ("diffusers", "UNet3DConditionModel"),
    "vae": ("diffusers", "AutoencoderKL"),
    "text_encoder": ("transformers", "CLIPTextModel"),
    "tokenizer": ("transformers", "CLIPTokenizer"),
    "scheduler": ("diffusers", "DDIMScheduler"),
}
# The settings that name a model, as the user sees them in every front end.
MODEL_FIELD = "'Model' preference / --model / FLIPSKETCH_MODEL"
SUBFOLDER_FIELD = "'Model folder' preference / --subfolder"
# Marker written into model_index.json by `flipsketch model create-tiny`.
TINY_MARKER = "_flipsketch_tiny_random"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_PROMPT_CACHE_SIZE = 32
# What the sampler's DDIM path (pipeline.ddim_move / to_noise) implements.
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
# Scheduler options the sampler does not implement, each with the value it assumes.
UNSUPPORTED_SCHEDULER_OPTIONS = {"clip_sample": False, "thresholding": False, "rescale_betas_zero_snr": False}


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from, as the user named it; recorded in run.json."""

    name: str
    subfolder: str | None = None
    revision: str | None = None

    def describe(self) -> str:
        parts = [self.name]
        if self.subfolder:
            parts.append(f"folder {self.subfolder}")
        if self.revision:
            parts.append(f"revision {self.revision}")
        return ", ".join(parts)

    def download_command(self) -> str:
        cmd = f"flipsketch model download {self.name}"
        if self.subfolder:
            cmd += f" --subfolder {self.subfolder}"
        if self.revision:
            cmd += f" --revision {self.revision}"
        return cmd


def source_from(name: str | None, subfolder: str | None = None, revision: str | None = None) -> ModelSource:
    """The model a user named (CLI flag, job field), else the default.
    Naming the published repo alone means its sketch checkpoint folder."""
    if not name:
        return default_source()
    if name == PUBLISHED_MODEL and subfolder is None:
        subfolder = PUBLISHED_SUBFOLDER
    return ModelSource(name, subfolder, revision)


def is_hub_id(name: str) -> bool:
    """Whether `name` has the form of a Hugging Face id ("owner/name")."""
    return bool(_HUB_ID.match(name))


def pick_device(name: str = "auto") -> str:
    """ "auto" -> the best available accelerator, else the CPU."""
    import torch

    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(name: str, device: str) -> torch.dtype:
    """ "auto" -> bf16 on CUDA (the released app's precision), fp32 elsewhere."""
    import torch

    table = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return table[name]


def default_source() -> ModelSource:
    """The model named by FLIPSKETCH_MODEL, else the published sketch checkpoint."""
    name = os.environ.get("FLIPSKETCH_MODEL")
    if name:
        return ModelSource(name)
    return ModelSource(PUBLISHED_MODEL, PUBLISHED_SUBFOLDER)


def hub_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def resolve_model_dir(source: ModelSource, allow_download: bool = True, marker: str = "model_index.json") -> Path:
    """Return the local folder holding `marker` for `source` (model_index.json:
    a diffusers pipeline; config.json: a transformers model such as CLIP).

    A name that is an existing folder is used as is. Anything else that looks
    like a hub id is looked up in the Hugging Face cache first and downloaded
    only when missing, so a cached model loads with no network at all.
    """
    path = Path(source.name).expanduser()
    if path.is_dir():
        return local_model_dir(path.resolve(), source.subfolder, marker)
    if not _HUB_ID.match(source.name):
        raise ModelNotFoundError(
            f"Model folder '{source.name}' (the {MODEL_FIELD}) does not exist.",
            f"Pass a folder that holds model_index.json, or a Hugging Face id such as {PUBLISHED_MODEL}.",
        )
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError

    patterns = [f"{source.subfolder}/*"] if source.subfolder else None
    try:
        try:
            root = snapshot_download(
                source.name, revision=source.revision, allow_patterns=patterns, local_files_only=True
            )
        except LocalEntryNotFoundError:
            if not allow_download:
                raise
            root = snapshot_download(source.name, revision=source.revision, allow_patterns=patterns)
    except (LocalEntryNotFoundError, RepositoryNotFoundError, HFValidationError, OSError) as exc:
        raise ModelNotFoundError(
            f"Model {source.describe()} is not in the local cache ({hub_cache_dir()}) "
            f"and could not be downloaded ({type(exc).__name__}).",
            f"Run `{source.download_command()}` on a machine with internet access, "
            "or pass the folder of a downloaded model.",
        ) from None
    folder = Path(root) / source.subfolder if source.subfolder else Path(root)
    if not folder.is_dir():
        raise ModelNotFoundError(
            f"Model {source.describe()} has no folder '{source.subfolder}' (the {SUBFOLDER_FIELD}).",
            "Check that setting against the repository's files.",
        )
    return folder


def local_model_dir(path: Path, subfolder: str | None, marker: str = "model_index.json") -> Path:
    """The model folder inside a local folder: `subfolder` where it exists, else
    the folder itself when it holds `marker` (a default subfolder such as
    checkpoint-2500 does not apply to it), else its only sub-folder with a
    `marker`. Raises ModelNotFoundError naming the settings otherwise."""
    if subfolder and (path / subfolder).is_dir():
        return path / subfolder
    if (path / marker).is_file():
        return path
    inside = sorted(child.name for child in path.iterdir() if (child / marker).is_file())
    if len(inside) == 1:
        return path / inside[0]
    asked = f"has no sub-folder '{subfolder}' (the {SUBFOLDER_FIELD}) and " if subfolder else ""
    found = f"holds several models ({', '.join(inside)})" if inside else f"holds no {marker}"
    raise ModelNotFoundError(
        f"Model folder '{path}' (the {MODEL_FIELD}) {asked}{found}.",
        f"Set the {SUBFOLDER_FIELD} to one of: {', '.join(inside)}."
        if inside
        else f"Point the model setting at the folder that holds {marker} "
        f"(for the published model, its '{PUBLISHED_SUBFOLDER}' folder).",
    )


def _download_failed(source: ModelSource, exc: Exception) -> ModelNotFoundError:
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return ModelNotFoundError(
        f"Model {source.describe()} could not be downloaded ({type(exc).__name__}: {first_line}).",
        "Check the internet connection and the model id; rerun the command to resume.",
    )


def download_model(source: ModelSource) -> Path:
    """Fetch a model into the Hugging Face cache (resumable; files verified by
    the hub client) and return its folder. Checks free disk space first."""
    import shutil

    from huggingface_hub import HfApi, snapshot_download

    patterns = [f"{source.subfolder}/*"] if source.subfolder else None
    cache = hub_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    try:
        info = HfApi().model_info(source.name, revision=source.revision, files_metadata=True)
    except Exception as exc:  # the hub client raises many network error types
        raise _download_failed(source, exc) from None
    prefix = f"{source.subfolder}/" if source.subfolder else ""
    needed = sum(f.size or 0 for f in info.siblings or [] if f.rfilename.startswith(prefix))
    free = shutil.disk_usage(cache).free
    if needed > free:
        raise ModelNotFoundError(
            f"Model {source.describe()} needs {needed / 2**30:.1f} GiB; {cache} has {free / 2**30:.1f} GiB free.",
            "Free some space or set HF_HUB_CACHE to a larger disk.",
        )
    try:
        root = snapshot_download(source.name, revision=source.revision, allow_patterns=patterns)
    except Exception as exc:
        raise _download_failed(source, exc) from None
    return Path(root) / source.subfolder if source.subfolder else Path(root)


def cached_models() -> list[str]:
    """Hub ids of the models in the local Hugging Face cache."""
    cache = hub_cache_dir()
    if not cache.is_dir():
        return []
    return sorted(p.name[len("models--") :].replace("--", "/") for p in cache.glob("models--*"))


def check_layout(folder: Path) -> dict[str, Any]:
    """Fail with the name of the first missing component before loading anything."""
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise ModelCorruptError(
            f"'{folder}' (from the {MODEL_FIELD} and {SUBFOLDER_FIELD}) has no model_index.json, "
            "so it is not a diffusers model folder.",
            "Point the model setting at the folder that holds model_index.json "
            f"(for the published model, its '{PUBLISHED_SUBFOLDER}' folder).",
        )
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelCorruptError(f"'{index_file}' cannot be read: {exc}.", "Re-download the model.") from None
    for name in COMPONENTS:
        if not (folder / name).is_dir():
            raise ModelCorruptError(
                f"Model folder '{folder}' is missing its '{name}/' component.",
                "The download is incomplete: download the model again.",
            )
    return index


def check_scheduler(config: Any, folder: Path) -> None:
    """Refuse a scheduler configuration the sampler would silently ignore.

    The sampler moves latents with its own DDIM formula (pipeline.ddim_move):
    it honours `prediction_type` epsilon, v_prediction and sample, and assumes
    no x_0 clipping, no dynamic thresholding and no zero-terminal-SNR betas."""
    kind = config.get("prediction_type", "epsilon")
    if kind not in PREDICTION_TYPES:
        raise ModelCorruptError(
            f"The scheduler in '{folder}' has prediction_type {kind!r}, which the FlipSketch sampler does not "
            "implement.",
            f"Use a scheduler/scheduler_config.json with prediction_type one of {', '.join(PREDICTION_TYPES)}.",
        )
    for name, assumed in UNSUPPORTED_SCHEDULER_OPTIONS.items():
        if config.get(name, assumed) != assumed:
            raise ModelCorruptError(
                f"The scheduler in '{folder}' sets {name} = {config.get(name)!r}, which the FlipSketch sampler does "
                "not implement.",
                f'Set "{name}": {json.dumps(assumed)} in scheduler/scheduler_config.json.',
            )


@dataclass
class SketchModel:
    """The five components the sampler needs, frozen, plus where they came from."""

    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any
    source: ModelSource
    folder: Path
    is_tiny_random: bool
    loras: Any = field(default=None, repr=False)  # lora.LoraCache once a job names a LoRA
    _prompt_cache: OrderedDict[str, torch.Tensor] = field(default_factory=OrderedDict, repr=False)

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """Text embeddings, cached per prompt: the null prompt and a user's
        prompt are encoded once per session however many jobs reuse them."""
        import torch

        missing = [p for p in dict.fromkeys(prompts) if p not in self._prompt_cache]
        if missing:
            tokens = self.tokenizer(
                missing,
                padding="max_length",
                max_length=self.tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            )
            with torch.no_grad():
                hidden = self.text_encoder(tokens.input_ids.to(self.text_encoder.device))[0]
            for prompt, emb in zip(missing, hidden, strict=True):
                self._prompt_cache[prompt] = emb.to(self.dtype)
        for p in prompts:
            self._prompt_cache.move_to_end(p)
        while len(self._prompt_cache) > _PROMPT_CACHE_SIZE:
            self._prompt_cache.popitem(last=False)
        return torch.stack([self._prompt_cache[p] for p in prompts])


def load_model(
    source: ModelSource | str,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    allow_download: bool = True,
) -> SketchModel:
    """Load all components of a FlipSketch (ModelScope layout) model.

    Parameters are frozen (`requires_grad_(False)`) once here: the sampler's
    frame alignment differentiates through the UNet with respect to latents
    only, and frozen weights keep it from allocating parameter gradients.
    """
    import diffusers
    import torch
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    if isinstance(source, str):
        source = ModelSource(source)
    dtype = dtype or torch.float32
    folder = resolve_model_dir(source, allow_download=allow_download)
    index = check_layout(folder)
    parts: dict[str, Any] = {}
    for name, (library, class_name) in COMPONENTS.items():
        cls = getattr(diffusers if library == "diffusers" else transformers, class_name)
        kwargs: dict[str, Any] = {}
        if name in ("unet", "vae"):
            kwargs["torch_dtype"] = dtype
        elif name == "text_encoder":
            kwargs["dtype"] = dtype
        try:
            parts[name] = cls.from_pretrained(folder / name, **kwargs)
        except (OSError, ValueError, RuntimeError, KeyError, json.JSONDecodeError) as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelCorruptError(
                f"The '{name}' component in '{folder}' cannot be loaded: {first_line}",
                "Its files are damaged or incomplete: delete the folder and download the model again.",
            ) from None
    check_scheduler(parts["scheduler"].config, folder / "scheduler")
    for name in ("unet", "vae", "text_encoder"):
        parts[name].to(device).eval().requires_grad_(False)
    return SketchModel(**parts, source=source, folder=folder, is_tiny_random=bool(index.get(TINY_MARKER, False)))
