"""The loader a user's download goes through, exercised with the tiny model."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet3DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from flipsketch.errors import ModelCorruptError, ModelNotFoundError
from flipsketch.models import ModelSource, load_model, resolve_model_dir
from flipsketch.tiny_model import published_config


def test_tiny_model_has_published_layout(tiny_model_dir: Path) -> None:
    index = json.loads((tiny_model_dir / "model_index.json").read_text())
    assert index["_class_name"] == "TextToVideoSDPipeline"
    assert index["unet"] == ["diffusers", "UNet3DConditionModel"]
    for name in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (tiny_model_dir / name).is_dir()
    assert (tiny_model_dir / "tokenizer" / "vocab.json").is_file()
    merges = (tiny_model_dir / "tokenizer" / "merges.txt").read_text().splitlines()
    assert merges[0].startswith("#version") and len(merges) > 50


def test_round_trip_loads_published_classes(tiny_model) -> None:
    assert isinstance(tiny_model.unet, UNet3DConditionModel)
    assert isinstance(tiny_model.vae, AutoencoderKL)
    assert isinstance(tiny_model.text_encoder, CLIPTextModel)
    assert isinstance(tiny_model.tokenizer, CLIPTokenizer)
    assert isinstance(tiny_model.scheduler, DDIMScheduler)
    assert tiny_model.is_tiny_random
    assert not any(p.requires_grad for p in tiny_model.unet.parameters())
    full = published_config()
    assert set(full["vae"]) - {"_class_name", "scaling_factor"} <= set(tiny_model.vae.config)
    assert tiny_model.scheduler.config.steps_offset == full["scheduler"]["steps_offset"]
    assert list(tiny_model.unet.config.down_block_types) == full["unet"]["down_block_types"]


def test_tiny_vae_latents_have_unit_scale_like_the_real_one(tiny_model) -> None:
    """The published factor 0.18215 gives the real VAE unit-variance latents;
    the tiny VAE gets its own factor with the same effect."""
    from flipsketch.params import AnimateParams
    from flipsketch.pipeline import encode_sketch
    from flipsketch.sketch import prepare_image

    from .conftest import ROOT

    sketch = prepare_image(ROOT / "examples" / "cat.png", 64, 64)
    latents = encode_sketch(tiny_model, sketch, AnimateParams(prompt="x", width=64, height=64))
    assert 0.3 < latents.std().item() < 3


def test_attention_module_names_match_the_real_model(tiny_model) -> None:
    cfg = {k: v for k, v in published_config()["unet"].items() if k != "_class_name"}
    with torch.device("meta"):
        real = UNet3DConditionModel(**cfg)
    assert set(real.attn_processors) == set(tiny_model.unet.attn_processors)
    assert "down_blocks.0.temp_attentions.1.transformer_blocks.0.attn1.processor" in real.attn_processors


def test_dtype_is_the_callers_choice(tiny_model_dir: Path) -> None:
    model = load_model(str(tiny_model_dir), dtype=torch.bfloat16)
    assert model.unet.dtype == torch.bfloat16 and model.vae.dtype == torch.bfloat16
    assert model.encode_prompts(["a cat"]).dtype == torch.bfloat16


def test_prompt_embeddings_are_cached(tiny_model, monkeypatch: pytest.MonkeyPatch) -> None:
    first = tiny_model.encode_prompts(["a dog runs", ""])
    calls = []
    original = tiny_model.text_encoder.forward
    monkeypatch.setattr(tiny_model.text_encoder, "forward", lambda *a, **k: calls.append(1) or original(*a, **k))
    again = tiny_model.encode_prompts(["", "a dog runs"])
    assert calls == []
    assert torch.equal(again[1], first[0]) and torch.equal(again[0], first[1])
    assert not torch.equal(first[0], first[1])


def test_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        load_model(str(tmp_path / "nowhere" / "model"))


def test_missing_component_is_named(tiny_model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    shutil.rmtree(broken / "vae")
    with pytest.raises(ModelCorruptError, match="missing its 'vae/' component") as info:
        load_model(str(broken))
    assert "download the model again" in info.value.hint


def test_corrupt_weights_are_named(tiny_model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "corrupt"
    shutil.copytree(tiny_model_dir, broken)
    weights = broken / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelCorruptError, match=r"'unet' component .* cannot be loaded"):
        load_model(str(broken))


def test_offline_hub_id_fails_fast_with_the_download_command(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "cache"))
    source = ModelSource("Hmrishav/t2v_sketch-lora", subfolder="checkpoint-2500")
    with pytest.raises(ModelNotFoundError) as info:
        load_model(source)
    message = str(info.value)
    assert "Hmrishav/t2v_sketch-lora" in message and str(tmp_path / "cache") in message
    assert "flipsketch model download Hmrishav/t2v_sketch-lora --subfolder checkpoint-2500" in message


def test_the_default_subfolder_applies_only_where_it_exists(tiny_model_dir: Path, tmp_path: Path) -> None:
    # the add-on sends "checkpoint-2500" by default, also with a local folder
    assert resolve_model_dir(ModelSource(str(tiny_model_dir), "checkpoint-2500")) == tiny_model_dir.resolve()
    outer = tmp_path / "downloaded"
    outer.mkdir()
    (outer / "checkpoint-2500").symlink_to(tiny_model_dir, target_is_directory=True)
    assert resolve_model_dir(ModelSource(str(outer), "checkpoint-2500")) == outer.resolve() / "checkpoint-2500"
    assert resolve_model_dir(ModelSource(str(outer))) == outer.resolve() / "checkpoint-2500"  # found inside
    (outer / "checkpoint-5000").symlink_to(tiny_model_dir, target_is_directory=True)
    with pytest.raises(ModelNotFoundError, match="'Model folder' preference / --subfolder") as error:
        resolve_model_dir(ModelSource(str(outer), "checkpoint-9999"))
    assert "several models (checkpoint-2500, checkpoint-5000)" in error.value.message
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError, match=r"'Model' preference / --model.*holds no model_index.json"):
        resolve_model_dir(ModelSource(str(empty), "checkpoint-2500"))
