"""Single-file LoRAs as people share them: kohya-ss and diffusers keys, mapped
onto the UNet3D's modules, applied like a folder, fingerprinted by file."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from flipsketch.errors import InputError
from flipsketch.lora import LoraRef, applied_loras, check_folder, fingerprint, read_lora_file
from flipsketch.models import load_model

from .test_lora import make_adapter

GIVEN = Path("/work/shared/cases/inputs/kohya_style_lora.safetensors")


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(str(tiny_model_dir))


@pytest.fixture(scope="module")
def folder(model, tmp_path_factory) -> Path:
    """A peft LoRA folder for the tiny UNet: the reference every file format must match."""
    return make_adapter(tmp_path_factory.mktemp("files") / "peft", model.unet, seed=7)


def peft_state(folder: Path) -> dict[str, torch.Tensor]:
    """The folder's weights on plain module names (peft saves 'base_model.model.' keys)."""
    return {
        k.removeprefix("base_model.model."): v for k, v in load_file(str(folder / "adapter_model.safetensors")).items()
    }


def as_kohya(folder: Path, path: Path) -> Path:
    """The folder's adapter written the way kohya-ss names it, with half its
    alpha and twice its up weights: the same change, if alpha is honoured."""
    alpha = float(json.loads((folder / "adapter_config.json").read_text())["lora_alpha"]) / 2
    state = {}
    for key, value in peft_state(folder).items():
        module, part = key.split(".lora_")
        name = "lora_unet_" + module.replace(".", "_")
        if part.startswith("A"):
            state[f"{name}.lora_down.weight"] = value
        else:
            state[f"{name}.lora_up.weight"] = value * 2
        state[f"{name}.alpha"] = torch.tensor(alpha)
    save_file(state, str(path))
    return path


def as_diffusers(folder: Path, path: Path, old_keys: bool = False) -> Path:
    """The folder's adapter as diffusers' pytorch_lora_weights.safetensors
    ('unet.' prefix; peft lora_A/B, or the older lora.down/up names)."""
    rename = {"lora_A": "lora.down", "lora_B": "lora.up"} if old_keys else {}
    state = {}
    for key, value in peft_state(folder).items():
        for new, old in rename.items():
            key = key.replace(new, old)
        state[f"unet.{key}"] = value
    save_file(state, str(path))
    return path


def forward(model, refs: list[LoraRef]) -> tuple[torch.Tensor, list[dict]]:
    x = torch.randn(1, 4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with applied_loras(model, refs) as recorded:
        return model.unet(x, 500, encoder_hidden_states=model.encode_prompts(["a cat"])).sample, recorded


def test_the_given_kohya_file_maps_onto_unet3d_modules(model) -> None:
    modules = {name for name, _ in model.unet.named_modules()}
    config, state = read_lora_file(GIVEN, modules)
    targets = {
        "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
        "transformer_in.transformer_blocks.0.attn1.to_q",
    }
    assert set(config.target_modules) == targets and targets <= modules  # transformer_in: not "transformer.in"
    assert (config.r, config.lora_alpha) == (4, 4.0)
    assert set(state) == {f"{t}.lora_{ab}.weight" for t in targets for ab in "AB"}


def test_the_given_kohya_file_names_the_layer_it_does_not_fit(model) -> None:
    # the file is for a model with 32 channels there; the tiny UNet has 16 and 64
    with pytest.raises(InputError, match=r"cannot be applied to this model: size mismatch .*to_q"):
        forward(model, [LoraRef(str(GIVEN))])
    base, _ = forward(model, [])
    assert not any("lora" in name for name, _ in model.unet.named_parameters())  # nothing left behind
    assert torch.isfinite(base).all()


@pytest.mark.parametrize("kind", ["kohya", "diffusers", "diffusers_old_keys"])
def test_a_single_file_gives_the_same_frames_as_the_folder(model, folder, tmp_path, kind) -> None:
    writers = {
        "kohya": lambda p: as_kohya(folder, p / "style.safetensors"),
        "diffusers": lambda p: as_diffusers(folder, p / "pytorch_lora_weights.safetensors"),
        "diffusers_old_keys": lambda p: as_diffusers(folder, p / "pytorch_lora_weights.safetensors", old_keys=True),
    }
    path = writers[kind](tmp_path)
    base, _ = forward(model, [])
    reference, _ = forward(model, [LoraRef(str(folder), 0.8)])
    out, recorded = forward(model, [LoraRef(str(path), 0.8)])
    assert (reference - base).abs().max() > 1e-3
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    digest = fingerprint(path)
    assert recorded == [{"path": str(path), "weight": 0.8, "sha256": digest}]
    assert digest != fingerprint(folder) and len(digest) == 64
    assert torch.equal(forward(model, [])[0], base)


def test_the_weights_file_of_a_folder_means_the_folder(folder) -> None:
    assert check_folder(folder / "adapter_model.safetensors") == folder.resolve()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: save_file({"lora_te_text_model_x.lora_down.weight": torch.zeros(2, 2)}, str(p)), "text-encoder"),
        (lambda p: save_file({"model.diffusion_model.x.weight": torch.zeros(2, 2)}, str(p)), "keys such as 'model"),
        (lambda p: save_file({"lora_unet_no_such_block.lora_down.weight": torch.zeros(2, 2)}, str(p)), "no_such_block"),
        (lambda p: save_file({"lora_unet_conv_in.hada_w1_a": torch.zeros(2, 2)}, str(p)), "LoHa"),
        (lambda p: p.write_bytes(b"\x00" * 40), "cannot be read as safetensors"),
    ],
)
def test_other_formats_are_named_with_the_supported_ones(model, tmp_path, make, message) -> None:
    path = tmp_path / "odd.safetensors"
    make(path)
    with pytest.raises(InputError, match=message) as error:
        forward(model, [LoraRef(str(path))])
    assert "kohya-ss" in str(error.value) or "damaged" in error.value.hint


def test_pickled_and_missing_files_are_refused_before_loading(tmp_path) -> None:
    (tmp_path / "style.ckpt").write_bytes(b"pickle")
    with pytest.raises(InputError, match=r"'\.ckpt' file, not \.safetensors"):
        check_folder(tmp_path / "style.ckpt")
    with pytest.raises(InputError, match="neither a folder nor a file"):
        check_folder(tmp_path / "gone.safetensors")
