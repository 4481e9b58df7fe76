"""Dual-attention composition: where the processors go and what they do."""

import pytest
import torch
from diffusers.models.attention_processor import Attention

from flipsketch.attention import (
    CompositionControl,
    FlipSketchAttnProcessor,
    Mode,
    classify_attn1,
    flipsketch_attention,
    frame0_logit_scale,
)
from flipsketch.errors import Cancelled
from flipsketch.progress import CancelToken


def test_attn1_layers_are_recognised_by_name(tiny_model) -> None:
    kinds = classify_attn1(tiny_model.unet)
    spatial = {n for n, k in kinds.items() if k == "spatial"}
    temporal = {n for n, k in kinds.items() if k == "temporal"}
    # The published block layout: 2+2+2 down, 1 mid, 3+3+3 up transformers.
    assert len(spatial) == 16 and len(temporal) == 17
    assert all(".attentions." in n and n.endswith("attn1") for n in spatial)
    assert all(("temp_attentions" in n or n.startswith("transformer_in")) and n.endswith("attn1") for n in temporal)
    assert not any(n.endswith("attn2") for n in kinds)


@pytest.mark.parametrize("frames", [8, 16])
def test_each_processor_sees_its_own_axis(tiny_model, frames: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """At F = 16 the 4x4 spatial layers of a 64x64 video have 16 tokens, as
    many as there are frames: the released shape test takes them for temporal."""
    seen: dict[str, tuple[str, tuple[int, ...]]] = {}
    original = FlipSketchAttnProcessor.__call__

    def spy(self, attn, hidden_states, *args, **kwargs):
        seen[self.name] = (self.kind, tuple(hidden_states.shape))
        return original(self, attn, hidden_states, *args, **kwargs)

    monkeypatch.setattr(FlipSketchAttnProcessor, "__call__", spy)
    control = CompositionControl(num_frames=frames)
    latents = torch.randn(1, 4, frames, 8, 8)
    with flipsketch_attention(tiny_model.unet, control), torch.no_grad():
        tiny_model.unet(latents, 10, encoder_hidden_states=tiny_model.encode_prompts(["a"]))
    assert len(seen) == 33
    collisions = 0
    for kind, shape in seen.values():
        if kind == "spatial":
            assert shape[0] == frames  # (frames, tokens, channels)
            collisions += shape[1] == frames
        else:
            assert shape[1] == frames  # (tokens, frames, channels)
    assert (collisions > 0) == (frames == 16)  # the 4x4 layers collide at 16, and are still spatial


def test_original_processors_come_back_after_errors(tiny_model) -> None:
    before = tiny_model.unet.attn_processors
    token = CancelToken()
    token.cancel()
    with (
        pytest.raises(Cancelled),
        flipsketch_attention(tiny_model.unet, CompositionControl(num_frames=2, cancel=token)),
        torch.no_grad(),
    ):
        tiny_model.unet(torch.randn(1, 4, 2, 8, 8), 10, encoder_hidden_states=tiny_model.encode_prompts(["a"]))
    after = tiny_model.unet.attn_processors
    assert after.keys() == before.keys()
    assert all(after[k] is before[k] for k in before)


def _identity_attention(dim: int) -> Attention:
    attn = Attention(query_dim=dim, heads=1, dim_head=dim)
    with torch.no_grad():
        for linear in (attn.to_q, attn.to_k, attn.to_v, attn.to_out[0]):
            linear.weight.copy_(torch.eye(dim))
            if linear.bias is not None:
                linear.bias.zero_()
    return attn.eval()


def _key0_weights(lam: float, frames: int = 6) -> torch.Tensor:
    """Attention weight of every query frame on key 0 under C^T.

    With identity projections and a value whose last channel is 1 only for
    frame 0, that channel of the output is exactly the weight on key 0."""
    dim = 4
    attn = _identity_attention(dim)
    control = CompositionControl(num_frames=frames, logit_scale=frame0_logit_scale(frames, lam))
    processor = FlipSketchAttnProcessor("temp", "temporal", control)
    reference = torch.tensor([[[2.0, 2.0, 0.0, 0.0]]])  # (tokens=1, frames=1, channels)
    control.mode = Mode.RECORD
    processor(attn, reference)
    video = torch.zeros(1, frames, dim)  # (samples*tokens, frames, channels)
    video[0, :, :2] = 1.0
    video[0, 0, 3] = 1.0
    control.mode, control.cond = Mode.COMPOSE, slice(0, 1)
    with torch.no_grad():
        return processor(attn, video)[0, :, 3]


def test_lambda_raises_later_frames_attention_to_the_reference() -> None:
    w0, w_half, w1 = _key0_weights(0.0), _key0_weights(0.5), _key0_weights(1.0)
    assert torch.allclose(w0[0], w1[0])  # frame 0 itself is not rescaled (j = 0)
    assert (w_half[1:] > w0[1:]).all() and (w1[1:] > w_half[1:]).all()
    gain = w1 - w0
    assert (gain[2:] > gain[1:-1]).all()  # and more so the later the frame


def test_temporal_composition_uses_the_reference_key_for_frame_0() -> None:
    attn = _identity_attention(4)
    control = CompositionControl(num_frames=3, logit_scale=frame0_logit_scale(3, 0.0))
    processor = FlipSketchAttnProcessor("temp", "temporal", control)
    control.mode = Mode.RECORD
    processor(attn, torch.tensor([[[0.0, 0.0, 5.0, 0.0]]]))
    video = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 0.0]]])
    control.mode = Mode.PLAIN
    plain = processor(attn, video)
    control.mode, control.cond = Mode.COMPOSE, slice(0, 1)
    composed = processor(attn, video)
    # Frames 1 and 2 look like the reference key, so they now attend mostly to frame 0's value.
    assert (composed[0, 1:, 0] > plain[0, 1:, 0] + 0.2).all()
