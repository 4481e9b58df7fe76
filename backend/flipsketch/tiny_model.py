"""A randomly initialised model in the published checkpoint's exact layout.

No machine in CI reaches a model hub, yet the loader, the sampler and the
service must run for real. This writes a model with the same classes, the
same block layout (hence the same attention module names) and the same files
as `Hmrishav/t2v_sketch-lora/checkpoint-2500`, only narrower, so that it is
loaded through `flipsketch.models.load_model` like a user's download.
Its output is noise: nothing that uses it may present it as an animation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flipsketch.models import COMPONENTS, TINY_MARKER

PUBLISHED_CONFIG = Path(__file__).parent / "configs" / "modelscope_t2v.json"
TINY_NOTICE = (
    "NOTE: this is the tiny random test model; its output is noise, not a real animation. "
    "Set FLIPSKETCH_MODEL or --model to the published sketch model for real results."
)

# Text used to learn a small byte-level BPE vocabulary for the tiny tokenizer.
_TINY_VOCAB = 600  # at most this many BPE tokens; the text encoder has as many rows
_TOKENIZER_CORPUS = (
    "a cat turns its head and meows. the bird flaps its wings and flies away. "
    "a man walks to the left, waves his hand and smiles. a horse gallops across the field. "
    "the flower sways in the wind; a fish swims in circles. a dancer spins on one leg."
)

# Widths of the tiny CLIP / X-CLIP metric models (tests of flipsketch.metrics).
_TINY_TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2}
_TINY_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2}


def published_config() -> dict[str, Any]:
    return json.loads(PUBLISHED_CONFIG.read_text(encoding="utf-8"))


def tiny_configs() -> dict[str, dict[str, Any]]:
    """Published configs with the widths shrunk and the structure kept."""
    full = published_config()
    strip = {"_class_name"}
    unet = {k: v for k, v in full["unet"].items() if k not in strip}
    unet.update(block_out_channels=[16, 16, 32, 32], attention_head_dim=8, cross_attention_dim=32, norm_num_groups=8)
    vae = {k: v for k, v in full["vae"].items() if k not in strip}
    vae.update(block_out_channels=[8, 8, 16, 16], layers_per_block=1, norm_num_groups=4, sample_size=64)
    text = {k: v for k, v in full["text_encoder"].items() if k not in strip}
    text.update(
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_hidden_layers=2,
        projection_dim=32,
        vocab_size=_TINY_VOCAB,
        # ids of <|startoftext|> and <|endoftext|> in the learned vocabulary
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    scheduler = {k: v for k, v in full["scheduler"].items() if k not in strip}
    return {"unet": unet, "vae": vae, "text_encoder": text, "scheduler": scheduler}


def _write_tokenizer(folder: Path, vocab_size: int) -> None:
    """Learn real vocab.json/merges.txt files locally and save a CLIPTokenizer."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    specials = ["<|startoftext|>", "<|endoftext|>"]
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>", unk_token=specials[1]))
    bpe.normalizer = normalizers.Lowercase()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    bpe.train_from_iterator([_TOKENIZER_CORPUS], trainer)
    folder.mkdir(parents=True, exist_ok=True)
    bpe.model.save(str(folder))  # vocab.json + merges.txt
    CLIPTokenizer.from_pretrained(folder, model_max_length=77).save_pretrained(folder)


def _unit_latent_scale(vae: Any) -> float:
    """The factor that gives this VAE's latents unit variance on line drawings.

    The published 0.18215 does that for the real VAE; a random VAE's latents
    are ~20x smaller, which would make the UNet's noise dwarf the sketch."""
    import torch

    canvas = torch.ones(1, 3, 64, 64)
    canvas[:, :, 16:48:4, 8:56] = -1.0  # horizontal strokes
    canvas[:, :, 8:56, 20:44:6] = -1.0  # vertical strokes
    with torch.no_grad():
        latents = vae.encode(canvas).latent_dist.mean
    return round(1.0 / latents.std().item(), 5)


def create_tiny_model(folder: str | Path, seed: int = 0, configs: dict[str, dict[str, Any]] | None = None) -> Path:
    """Write the tiny random model to `folder` (created; must be empty or absent).

    `configs` replaces the tiny UNet/VAE/text-encoder configs, e.g. with the
    published ones to benchmark at real size."""
    import diffusers
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet3DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"'{folder}' is not empty; choose a new folder for the tiny model.")
    cfg = {**tiny_configs(), **(configs or {})}
    cfg = {name: {k: v for k, v in part.items() if k != "_class_name"} for name, part in cfg.items()}
    torch.manual_seed(seed)
    UNet3DConditionModel(**cfg["unet"]).save_pretrained(folder / "unet")
    vae = AutoencoderKL(**cfg["vae"])
    vae.register_to_config(scaling_factor=_unit_latent_scale(vae))
    vae.save_pretrained(folder / "vae")
    CLIPTextModel(CLIPTextConfig(**cfg["text_encoder"])).save_pretrained(folder / "text_encoder")
    DDIMScheduler(**cfg["scheduler"]).save_pretrained(folder / "scheduler")
    _write_tokenizer(folder / "tokenizer", _TINY_VOCAB)
    index = {
        "_class_name": published_config()["pipeline_class"],
        "_diffusers_version": diffusers.__version__,
        TINY_MARKER: True,
        **{name: list(lib_cls) for name, lib_cls in COMPONENTS.items()},
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    return folder


def create_tiny_clip(folder: str | Path, seed: int = 0) -> Path:
    """A tiny random CLIPModel + CLIPProcessor in the layout of
    `openai/clip-vit-base-patch32` (config, weights, preprocessor and tokenizer files)."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    folder = Path(folder)
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config={**_TINY_TEXT, "vocab_size": _TINY_VOCAB, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1},
        vision_config={**_TINY_VISION, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    _write_tokenizer(folder, _TINY_VOCAB)
    CLIPModel(config).save_pretrained(folder)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=images, tokenizer=CLIPTokenizer.from_pretrained(folder)).save_pretrained(folder)
    return folder


def create_tiny_xclip(folder: str | Path, seed: int = 0, num_frames: int = 4) -> Path:
    """A tiny random XCLIPModel + XCLIPProcessor in the layout of
    `microsoft/xclip-base-patch32`; the video encoder takes `num_frames` frames."""
    import torch
    from transformers import CLIPTokenizer, VideoMAEImageProcessor, XCLIPConfig, XCLIPModel, XCLIPProcessor

    folder = Path(folder)
    torch.manual_seed(seed)
    config = XCLIPConfig(
        text_config={**_TINY_TEXT, "vocab_size": _TINY_VOCAB, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1},
        vision_config={
            **_TINY_VISION,
            **{"image_size": 32, "patch_size": 8, "num_frames": num_frames},
            **{"mit_hidden_size": 16, "mit_intermediate_size": 64, "mit_num_hidden_layers": 1},
            "mit_num_attention_heads": 4,
        },
        projection_dim=16,
        prompt_layers=1,
        prompt_num_attention_heads=4,
    )
    _write_tokenizer(folder, _TINY_VOCAB)
    XCLIPModel(config).save_pretrained(folder)
    # The published X-CLIP processors hold VideoMAE's video preprocessor.
    images = VideoMAEImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    XCLIPProcessor(image_processor=images, tokenizer=CLIPTokenizer.from_pretrained(folder)).save_pretrained(folder)
    return folder
