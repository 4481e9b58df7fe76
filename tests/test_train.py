"""`flipsketch train-lora` on the tiny model (CPU): data checks, learning,
the saved adapter, checkpoints and resume."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from flipsketch.cli import main
from flipsketch.clips import load_clips
from flipsketch.errors import InputError
from flipsketch.lora import LoraRef, check_folder
from flipsketch.models import load_model
from flipsketch.params import AnimateParams
from flipsketch.pipeline import animate
from flipsketch.train import train_lora
from flipsketch.train_config import TrainConfig, checkpoints

from .synthetic import draw_frame, write_clips

FAST = dict(rank=8, learning_rate=1e-2, batch=2, resolution=64, frames=4, checkpoint_every=10)


@pytest.fixture(scope="module")
def clip_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clips(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    """A model of its own: training injects an adapter into its UNet."""
    return load_model(str(tiny_model_dir))


@pytest.fixture(scope="module")
def trained(clip_data, model, tmp_path_factory):
    out = tmp_path_factory.mktemp("lora") / "style"
    return train_lora(clip_data, out, model, TrainConfig(steps=30, validation_steps=3, **FAST))


def test_loss_falls_and_only_the_adapter_learns(trained, model) -> None:
    losses = trained.record["losses"]
    assert len(losses) == 30
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < 0.9 * first, f"loss {first:.3f} -> {last:.3f}: expected a drop of at least 10 % (measured ~19 %)"
    with_grad = [n for n, p in model.unet.named_parameters() if p.grad is not None]
    assert with_grad and all(".lora_A.trained." in n or ".lora_B.trained." in n for n in with_grad)
    lora_params = [n for n, _ in model.unet.named_parameters() if ".trained." in n]
    assert sorted(with_grad) == sorted(lora_params)
    # The adapter covers the spatial and temporal attention projections.
    assert any("temp_attentions" in n and "to_q" in n for n in lora_params)
    assert any(".attentions." in n and "attn2.to_k" in n for n in lora_params)


def test_outputs_of_a_run(trained) -> None:
    out = trained.out
    check_folder(out)  # the folder is a LoRA a job can name
    record = json.loads((out / "run.json").read_text())
    assert record["steps_done"] == 30 and record["config"]["rank"] == 8
    assert [c["name"] for c in record["data"]["clips"]] == ["clip0", "clip1", "clip2"]
    assert [p.name for p in checkpoints(out)] == ["step-000010", "step-000020", "step-000030"]
    for ckpt in checkpoints(out):
        check_folder(ckpt)
    validation = out / "validation"
    assert sorted(p.name for p in validation.glob("frame_*.png")) == [f"frame_{i:04d}.png" for i in range(4)]
    assert json.loads((validation / "run.json").read_text())["params"]["loras"] == [{"path": str(out), "weight": 1.0}]


def test_reloaded_adapter_reproduces_the_trained_pipeline(trained, model, tiny_model_dir) -> None:
    out = trained.out
    sketch = Image.fromarray(trained.trainer.clips[0].frames[0], "L")
    params = AnimateParams(
        prompt="a ball rolls", width=64, height=64, frames=4, steps=4, align_iters=2, binarize=False,
        loras=[LoraRef(str(out))],
    )  # fmt: skip
    in_memory = animate(model, sketch, params)  # the adapter as trained, never saved or reloaded
    fresh = load_model(str(tiny_model_dir))
    reloaded = animate(fresh, sketch, params)  # loaded from the folder, as a user's job does
    for a, b in zip(in_memory.frames[0], reloaded.frames[0], strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert reloaded.stats["loras"][0]["sha256"] == in_memory.stats["loras"][0]["sha256"]
    base = animate(load_model(str(tiny_model_dir)), sketch, replace(params, loras=[]))
    assert not np.array_equal(np.asarray(base.frames[0][1]), np.asarray(reloaded.frames[0][1]))


def test_resume_continues_exactly(clip_data, model, tmp_path) -> None:
    config = dict(FAST, checkpoint_every=3, validation_steps=0)
    straight = train_lora(clip_data, tmp_path / "a", model, TrainConfig(steps=6, **config))
    train_lora(clip_data, tmp_path / "b", model, TrainConfig(steps=3, **config))
    with pytest.raises(InputError, match="already holds a LoRA training run"):
        train_lora(clip_data, tmp_path / "b", model, TrainConfig(steps=6, **config))
    resumed = train_lora(clip_data, tmp_path / "b", model, TrainConfig(steps=6, **config), resume=True)
    assert resumed.record["resumed_from"].endswith("step-000003")
    assert resumed.record["losses"] == straight.record["losses"]
    a, b = (load_file(str(tmp_path / name / "adapter_model.safetensors")) for name in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    state_a, state_b = (
        torch.load(tmp_path / name / "checkpoints" / "step-000006" / "trainer.pt", weights_only=True)
        for name in ("a", "b")
    )
    moments = [(s["exp_avg"], s["exp_avg_sq"], s["step"]) for s in state_a["optimizer"]["state"].values()]
    resumed_moments = [(s["exp_avg"], s["exp_avg_sq"], s["step"]) for s in state_b["optimizer"]["state"].values()]
    assert all(
        torch.equal(x, y) for m, n in zip(moments, resumed_moments, strict=True) for x, y in zip(m, n, strict=True)
    )
    with pytest.raises(InputError, match="rank 8 \\(now 4\\)"):
        train_lora(clip_data, tmp_path / "b", model, TrainConfig(steps=9, **{**config, "rank": 4}), resume=True)


def _problem(data: Path, **kwargs) -> str:
    with pytest.raises(InputError) as info:
        load_clips(data, kwargs.get("resolution", 64), kwargs.get("frames", 4))
    return str(info.value)


def test_bad_data_is_named(tmp_path) -> None:
    assert "does not exist" in _problem(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    assert "holds no clips" in _problem(tmp_path / "empty")

    data = write_clips(tmp_path / "data", count=2)
    (data / "clip1" / "caption.txt").unlink()
    message = _problem(data)
    assert "1 of 2 clips" in message and "'clip1' has no caption" in message

    (data / "clip1" / "caption.txt").write_text("  \n")
    assert "is empty" in _problem(data)
    (data / "clip1" / "caption.txt").write_text("a ball")

    draw_frame(2, size=(96, 80)).save(data / "clip0" / "frame_0002.png")
    assert "'clip0' has frames of different sizes (80×80 and 96×80)" in _problem(data)
    draw_frame(2).save(data / "clip0" / "frame_0002.png")

    (data / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    (data / "broken.txt").write_text("a ball")
    assert "video '" in _problem(data) and "broken.mp4' cannot be read" in _problem(data)
    (data / "broken.mp4").unlink()

    (data / "clip1" / "frame_0001.png").write_bytes(b"not a png")
    assert "clip1" in _problem(data) and "not an image file" in _problem(data)
    shutil.rmtree(data / "clip1")

    assert "'clip0' has 6 drawings; training uses 8" in _problem(data, frames=8)
    unpadded = tmp_path / "unpadded" / "walk"  # walk1.png … walk11.png: frame 2 comes before frame 10
    unpadded.mkdir(parents=True)
    for i in range(1, 12):
        draw_frame(i).save(unpadded / f"walk{i}.png")
    (unpadded / "caption.txt").write_text("a ball rolls")
    (walk,) = load_clips(unpadded.parent, 64, 4)
    expected = [prepared_frame(draw_frame(i)) for i in range(1, 12)]
    assert all(np.array_equal(a, b) for a, b in zip(walk.frames, expected, strict=True))
    assert load_clips(data, 64, 4)[0].caption == "a ball rolls to the right, take 0"


def test_held_frames_are_dropped_unless_kept(tmp_path) -> None:
    from flipsketch.outputs import write_mp4

    on_twos = [draw_frame(i // 2).convert("RGB") for i in range(10)]  # 5 drawings, each held for 2 frames
    write_mp4(on_twos, tmp_path / "twos.mp4", fps=12)  # lossy: holds differ by compression noise
    (tmp_path / "twos.txt").write_text("a ball rolls")
    (clip,) = load_clips(tmp_path, 64, 4)
    assert (len(clip.frames), clip.holds) == (5, 5)
    for i, frame in enumerate(clip.frames):  # decoded as the drawings, up to compression noise
        assert np.abs(frame.astype(int) - prepared_frame(draw_frame(i))).mean() < 8
    assert len(load_clips(tmp_path, 64, 4, keep_holds=True)[0].frames) == 10
    assert "'twos' has 5 drawings (5 more repeat the drawing before them); training uses 8" in _problem(
        tmp_path, frames=8
    )


def test_gif_and_stroke_clips_are_prepared_like_sketches(tmp_path) -> None:
    frames = [draw_frame(i) for i in range(5)]
    inverted = [Image.eval(f, lambda v: 255 - v) for f in frames]  # chalk: white lines on black
    inverted[0].save(tmp_path / "chalk.gif", save_all=True, append_images=inverted[1:], duration=80)
    (tmp_path / "chalk.txt").write_text("a ball rolls")
    strokes = tmp_path / "drawn"
    strokes.mkdir()
    for i in range(4):
        stroke = {"points": [[0.1 + 0.1 * i, 0.5], [0.6 + 0.1 * i, 0.5]], "radius": 0.02}
        data = {"schema": "flipsketch.strokes", "version": 1, "strokes": [stroke]}
        (strokes / f"frame_{i + 1:04d}.json").write_text(json.dumps(data))
    (strokes / "caption.txt").write_text("a line slides")
    gif, drawn = load_clips(tmp_path, 64, 4)
    assert (gif.name, len(gif.frames), drawn.name, len(drawn.frames)) == ("chalk", 5, "drawn", 4)
    assert np.median(gif.frames[0]) == 255 and gif.frames[0].min() < 100  # black lines on white again
    row = drawn.frames[:, 32]  # the stroke is a horizontal line at mid height, moving right
    assert row[0, 10] < 128 and row[3, 10] > 128 and row[3, 50] < 128


def test_cli_trains_and_reports_bad_data(clip_data, tiny_model_dir, tmp_path, capsys) -> None:
    out = tmp_path / "cli"
    args = ["train-lora", str(clip_data), "--out", str(out), "--model", str(tiny_model_dir), "--steps", "2"]
    args += ["--resolution", "64", "--frames", "4", "--rank", "4", "--validation-steps", "0"]
    assert main(args) == 0
    assert json.loads((out / "run.json").read_text())["steps_done"] == 2
    assert "LoRA written to" in capsys.readouterr().out
    check = ["train-lora", str(clip_data), "--out", str(tmp_path / "check"), "--model", str(tmp_path / "no-model")]
    assert main([*check, "--check-data", "--resolution", "64", "--frames", "4"]) == 0  # no model is loaded
    preview = Image.open(tmp_path / "check" / "data-preview" / "clip0.png")
    assert preview.size == (6 * 64 + 7 * 4, 64 + 2 * 4)  # all 6 frames, as the trainer sees them
    assert "3 clips are usable" in capsys.readouterr().out
    bad = tmp_path / "bad"
    write_clips(bad, count=1)
    (bad / "clip0" / "caption.txt").unlink()
    assert main(["train-lora", str(bad), "--out", str(tmp_path / "x"), "--model", str(tiny_model_dir)]) == 2
    assert "has no caption" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_training_benchmark_compares_each_workload_with_its_baseline(tmp_path, capsys) -> None:
    args = ["bench", "--train", "--size", "tiny", "--frames", "4", "--width", "64", "--height", "64"]
    assert main([*args, "--steps", "2", "--train-steps", "1", "--model-dir", str(tmp_path)]) == 0
    rows = {line[:3]: line[40:].split() for line in capsys.readouterr().out.splitlines() if line[:3] in "(e)(f)(g)(h)"}
    assert sorted(rows) == ["(e)", "(f)", "(g)", "(h)"]
    seconds = {k: float(v[0]) for k, v in rows.items()}
    for row, baseline in (("(f)", "(e)"), ("(h)", "(g)")):
        assert float(rows[row][1]) == pytest.approx(seconds[row] / seconds[baseline], rel=0.1)  # printed rounded


def test_a_warm_model_serves_plain_jobs_again_after_training(clip_data, model, tiny_model_dir, tmp_path) -> None:
    train_lora(clip_data, tmp_path / "quick", model, TrainConfig(steps=2, validation_steps=0, **FAST))
    assert not model.unet.training and not any(p.requires_grad for p in model.unet.parameters())
    x = torch.randn(1, 4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    text = model.encode_prompts(["a ball"])
    fresh = load_model(str(tiny_model_dir))
    with torch.no_grad():
        assert torch.equal(model.unet(x, 10, text).sample, fresh.unet(x, 10, text).sample)


def test_mixed_precision_bf16_base_float32_adapter(clip_data, tiny_model_dir, tmp_path) -> None:
    """The GPU set-up (bf16 base) on the CPU: the adapter trains and is applied
    in float32, so a job that loads it gives the trained pipeline's frames."""
    bf16 = load_model(str(tiny_model_dir), dtype=torch.bfloat16)
    out = tmp_path / "bf16"
    result = train_lora(clip_data, out, bf16, TrainConfig(steps=3, validation_steps=0, **FAST))
    assert result.record["dtype"] == "bfloat16"
    sketch = Image.fromarray(result.trainer.clips[0].frames[0], "L")
    params = AnimateParams(prompt="a ball", width=64, height=64, frames=4, steps=3, align_iters=2, binarize=False)
    params.loras = [LoraRef(str(out))]
    trained = animate(bf16, sketch, params)
    reloaded_model = load_model(str(tiny_model_dir), dtype=torch.bfloat16)
    reloaded = animate(reloaded_model, sketch, params)
    for model in (bf16, reloaded_model):
        assert {p.dtype for n, p in model.unet.named_parameters() if "lora_" in n} == {torch.float32}
    for a, b in zip(trained.frames[0], reloaded.frames[0], strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def prepared_frame(image: Image.Image) -> np.ndarray:
    """One frame prepared as the trainer prepares image frames (64²)."""
    from flipsketch.sketch import fit_to_frame, normalise_drawing

    return np.asarray(fit_to_frame(normalise_drawing(image, allow_blank=True), 64, 64))


def test_gradient_checkpointing_gives_the_same_gradients(clip_data, model) -> None:
    from flipsketch.train import LoraTrainer, gradient_checkpointing

    trainer = LoraTrainer(model, load_clips(clip_data, 64, 4), TrainConfig(steps=1, **FAST))
    model.unet.train()
    start = trainer.generator.get_state()
    grads, losses = [], []
    for checkpointed in (False, True):
        trainer.generator.set_state(start)  # the same sample both times
        trainer.optimizer.zero_grad(set_to_none=True)
        with gradient_checkpointing(model.unet, checkpointed):
            blocks = [m for m in model.unet.modules() if type(m).__name__ == "TransformerTemporalModel"]
            assert all(("forward" in vars(m)) == checkpointed for m in blocks)  # recomputed in backward
            loss = trainer.loss()
            loss.backward()
        losses.append(loss.item())
        grads.append({n: p.grad.clone() for n, p in trainer.named_params.items()})
    model.unet.eval()
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    assert any(g.abs().max() > 0 for g in grads[0].values())
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, rtol=1e-4, atol=1e-7)
