"""Applying LoRAs per job on a warm model: weights, combination, cache, unload,
bad adapters, and LoRAs sent to the real server."""

import copy
import json
import warnings
from base64 import b64encode
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
from safetensors.torch import load_file, save_file

from flipsketch.board import Shot
from flipsketch.errors import InputError
from flipsketch.lora import LoraRef, applied_loras, tuner_layers
from flipsketch.models import load_model
from flipsketch.params import AnimateParams

from .test_service import FAST, PNG, Server, raw


def make_adapter(folder: Path, unet: torch.nn.Module, seed: int, rank: int = 4) -> Path:
    """A random peft LoRA (both matrices non-zero) for `unet`, saved as a folder."""
    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=["to_q", "to_v"], init_lora_weights=False)
    with warnings.catch_warnings():  # the UNet may carry adapters of earlier tests
        warnings.simplefilter("ignore")
        scratch = inject_adapter_in_model(config, copy.deepcopy(unet))
    folder.mkdir(parents=True)
    state = get_peft_model_state_dict(scratch, save_embedding_layers=False)
    save_file({k: v * 0.5 for k, v in state.items()}, str(folder / "adapter_model.safetensors"))
    config.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_model(str(tiny_model_dir))


@pytest.fixture(scope="module")
def adapters(model, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    a = make_adapter(root / "a", model.unet, seed=1)
    copy_of_a = root / "a_copy"
    copy_of_a.mkdir()
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        (copy_of_a / name).write_bytes((a / name).read_bytes())
    return {"a": a, "a_copy": copy_of_a, "b": make_adapter(root / "b", model.unet, seed=2, rank=8)}


def forward(model, refs: list[LoraRef] | None = None) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 3, 8, 8, generator=generator)
    with applied_loras(model, refs or []):
        assert not any(p.requires_grad for p in model.unet.parameters())  # alignment must not train them
        return model.unet(x, 500, encoder_hidden_states=model.encode_prompts(["a cat"])).sample


def test_weights_combine_and_unloading_restores_the_base_exactly(model, adapters) -> None:
    base = forward(model)
    a1 = forward(model, [LoraRef(str(adapters["a"]), 1.0)])
    a2 = forward(model, [LoraRef(str(adapters["a"]), 2.0)])
    both = forward(model, [LoraRef(str(adapters["a"]), 1.0), LoraRef(str(adapters["a_copy"]), 1.0)])
    assert (a1 - base).abs().max() > 1e-3 and (a2 - a1).abs().max() > 1e-3
    torch.testing.assert_close(both, a2, rtol=1e-5, atol=1e-5)  # two adapters add their deltas
    assert torch.equal(forward(model, [LoraRef(str(adapters["a"]), 0.0)]), base)
    b1 = forward(model, [LoraRef(str(adapters["b"]), 1.0)])
    mixed = forward(model, [LoraRef(str(adapters["a"]), 0.5), LoraRef(str(adapters["b"]), 0.5)])
    assert min((mixed - a1).abs().max(), (mixed - b1).abs().max()) > 1e-4
    assert torch.equal(forward(model), base)  # bit for bit after all of that
    assert torch.equal(forward(model, [LoraRef(str(adapters["a"]), 1.0)]), a1)  # and back again


def _adapter_names(model) -> set[str]:
    return {name for layer in tuner_layers(model.unet) for name in layer.lora_A}


def test_adapters_stay_loaded_until_retrained_or_evicted(model, adapters, tmp_path) -> None:
    forward(model, [LoraRef(str(adapters["a"]))])
    names = _adapter_names(model)
    forward(model, [LoraRef(str(adapters["a"]))])
    assert _adapter_names(model) == names  # cached: nothing injected again

    retrained = make_adapter(tmp_path / "style", model.unet, seed=3)
    before = forward(model, [LoraRef(str(retrained))])
    state = load_file(str(retrained / "adapter_model.safetensors"))
    flipped = {k: -v if "lora_B" in k else v for k, v in state.items()}  # retrained: B A becomes -B A
    save_file(flipped, str(retrained / "adapter_model.safetensors"))
    after = forward(model, [LoraRef(str(retrained))])
    assert not torch.equal(before, after)  # the new weights were loaded, not the cached ones
    cache = model.loras
    assert [key[0] for key in cache.loaded].count(str(retrained.resolve())) == 1  # the old version is gone

    cache.capacity = 2
    try:
        oldest = next(iter(cache.loaded.values()))["name"]
        forward(model, [LoraRef(str(make_adapter(tmp_path / "another", model.unet, seed=4)))])
        assert len(cache.loaded) == 2 and oldest not in _adapter_names(model)
    finally:
        cache.capacity = 8


def test_bad_adapters_are_named_and_leave_the_model_as_it_was(model, adapters, tmp_path) -> None:
    base = forward(model)
    names = _adapter_names(model)

    def problem(path: Path | str) -> str:
        with pytest.raises(InputError) as info:
            forward(model, [LoraRef(str(path))])
        return str(info.value)

    assert "does not exist" in problem(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    assert "has no adapter_config.json" in problem(tmp_path / "empty")

    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / "adapter_config.json").write_bytes((adapters["a"] / "adapter_config.json").read_bytes())
    (truncated / "adapter_model.safetensors").write_bytes(
        (adapters["a"] / "adapter_model.safetensors").read_bytes()[:200]
    )
    assert "cannot be read" in problem(truncated)

    other_base = tmp_path / "other_base"  # right names, wrong shapes: made for a different model
    other_base.mkdir()
    (other_base / "adapter_config.json").write_bytes((adapters["a"] / "adapter_config.json").read_bytes())
    state = load_file(str(adapters["a"] / "adapter_model.safetensors"))
    save_file(
        {k: torch.zeros(v.shape[0], v.shape[1] + 3) for k, v in state.items()},
        str(other_base / "adapter_model.safetensors"),
    )
    assert "cannot be applied to this model" in problem(other_base)

    with pytest.raises(InputError, match="listed twice"):
        AnimateParams(prompt="x", loras=[LoraRef(str(adapters["a"])), LoraRef(str(adapters["a"]) + "/")]).validate()
    with pytest.raises(InputError, match="weight"):
        AnimateParams.from_dict({"prompt": "x", "loras": [{"path": str(adapters["a"]), "weight": 9}]})
    assert _adapter_names(model) == names and torch.equal(forward(model), base)


def test_server_applies_loras_per_job(tiny_model_dir, adapters, tmp_path) -> None:
    server = Server(tiny_model_dir, tmp_path / "jobs")
    try:
        plain = server.client.wait(server.client.submit(FAST, sketch_png=PNG)["id"])
        styled = server.client.submit({**FAST, "loras": [{"path": str(adapters["b"]), "weight": 1.5}]}, sketch_png=PNG)
        styled = server.client.wait(styled["id"])
        again = server.client.wait(server.client.submit(FAST, sketch_png=PNG)["id"])
        assert [j["state"] for j in (plain, styled, again)] == ["done"] * 3
        frames = {}
        for job in (plain, styled, again):
            files = server.client.download(job["id"], tmp_path / job["id"])
            frames[job["id"]] = [f.read_bytes() for f in sorted(files) if f.name.startswith("frame_")]
        record = json.loads((tmp_path / styled["id"] / "run.json").read_text())
        assert record["params"]["loras"] == [{"path": str(adapters["b"]), "weight": 1.5}]
        assert len(record["stats"]["loras"][0]["sha256"]) == 64
        assert frames[plain["id"]] == frames[again["id"]] != frames[styled["id"]]
        capabilities = server.client.capabilities()
        assert capabilities["loaded_loras"] == [str(adapters["b"].resolve())]
        assert capabilities["limits"]["max_loras"] == 8

        bad = {
            "params": {**FAST, "loras": [{"path": str(tmp_path / "missing")}]},
            "sketch_png": b64encode(PNG).decode(),
        }
        status, body = raw(server, "POST", "/v1/jobs", json.dumps(bad).encode())
        error = json.loads(body)["error"]
        assert status == 422 and error["field"] == "params" and "does not exist" in error["message"]
    finally:
        server.stop()


def test_a_retrained_lora_makes_a_storyboard_shot_run_again(model, tmp_path) -> None:
    style = make_adapter(tmp_path / "style", model.unet, seed=5)
    sketch = tmp_path / "cat.png"
    sketch.write_bytes(PNG)
    shot = Shot("s1", AnimateParams(prompt="x", loras=[LoraRef(str(style))]), 1, sketch, None)
    before = shot.fingerprint()
    assert shot.fingerprint() == before
    state = load_file(str(style / "adapter_model.safetensors"))
    save_file({k: v * 2 for k, v in state.items()}, str(style / "adapter_model.safetensors"))
    assert shot.fingerprint() != before


def test_cli_applies_loras_with_weights(tiny_model_dir, adapters, tmp_path) -> None:
    from flipsketch.cli import main

    from .conftest import ROOT

    odd = tmp_path / "style=v2"  # an '=' that belongs to the folder name
    odd.mkdir()
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        (odd / name).write_bytes((adapters["b"] / name).read_bytes())
    args = ["animate", str(ROOT / "examples" / "cat.png"), "--model", str(tiny_model_dir), "--prompt", "a cat"]
    args += ["--width", "64", "--height", "64", "--frames", "3", "--steps", "2", "--no-align"]
    args += ["--lora", f"{adapters['a']}=0.5", "--lora", str(odd), "--out", str(tmp_path / "out")]
    assert main(args) == 0
    record = json.loads((tmp_path / "out" / "run.json").read_text())
    assert record["params"]["loras"] == [{"path": str(adapters["a"]), "weight": 0.5}, {"path": str(odd), "weight": 1.0}]
    assert [entry["weight"] for entry in record["stats"]["loras"]] == [0.5, 1.0]
    assert main([*args[:-1], str(tmp_path / "bad"), "--lora", str(tmp_path / "nowhere")]) == 2
    assert not (tmp_path / "bad").exists()
