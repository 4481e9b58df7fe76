"""Dual-attention composition as diffusers attention processors.

FlipSketch changes every self-attention (`attn1`) layer of the video UNet:

* in a **reference pass** on the reference latent x_t^r (one frame, null
  prompt) each layer records what the composition needs later: spatial layers
  their queries, temporal layers their keys;
* in the **conditional branch** of the generation pass, spatial layers (C^S)
  give the first N frames the reference queries, and temporal layers (C^T)
  replace the key of frame 0 with the reference key and scale the logits from
  query frame j to key 0 by (1 + 0.02·λ·j).

Layers are recognised by module *name*, never by tensor shape (the released
code's shape test mistakes spatial layers for temporal ones when the number of
frames equals a spatial size, e.g. F = 16). The processors compute attention
with torch SDPA; the temporal logit scaling is an additive bias on column 0,
s·(q·k0) = q·k0 + (s−1)·(q·k0), so it stays inside SDPA too. Unlike the
released code, nothing depends on `Attention.get_attention_scores`, which
diffusers' SDPA path never calls.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch
import torch.nn.functional as F

from flipsketch.errors import Cancelled

SPATIAL_ATTN1 = re.compile(r"(?:^|\.)attentions\.\d+\.transformer_blocks\.\d+\.attn1$")
TEMPORAL_ATTN1 = re.compile(r"(?:^|\.)(?:temp_attentions\.\d+|transformer_in)\.transformer_blocks\.\d+\.attn1$")
LOGIT_SLOPE = 0.02  # the paper's per-frame increase of the frame-0 logit scale


class Mode(Enum):
    PLAIN = "plain"  # ordinary self-attention
    RECORD = "record"  # reference pass: store queries (spatial) / keys (temporal)
    COMPOSE = "compose"  # generation pass: use what was recorded


def classify_attn1(unet: torch.nn.Module) -> dict[str, str]:
    """Module name -> "spatial" | "temporal" for every self-attention layer."""
    kinds = {}
    for name, _ in unet.named_modules():
        if SPATIAL_ATTN1.search(name):
            kinds[name] = "spatial"
        elif TEMPORAL_ATTN1.search(name):
            kinds[name] = "temporal"
    return kinds


def frame0_logit_scale(num_frames: int, lam: float) -> torch.Tensor:
    """Scale of the logit from query frame j to key 0: 1 + 0.02·λ·j."""
    return 1.0 + LOGIT_SLOPE * lam * torch.arange(num_frames, dtype=torch.float32)


@dataclass
class CompositionControl:
    """State shared by all FlipSketch processors of one UNet during one run.

    The sampler switches `mode` around each UNet forward; the processors read it.
    `records[layer]` holds the reference tensors of the step being composed.
    """

    mode: Mode = Mode.PLAIN
    records: dict[str, torch.Tensor] = field(default_factory=dict)
    cond: slice = field(default_factory=lambda: slice(0, 0))  # samples that get composition
    num_frames: int = 1
    spatial_frames: int = 0  # N: frames 0..N-1 take the reference queries
    logit_scale: torch.Tensor | None = None  # (F,) for C^T
    use_spatial: bool = True
    use_temporal: bool = True
    cancel: Any = None  # object with `.is_set()`; checked in every attn1 call

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("The job was cancelled.")


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.view(b, n, heads, c // heads).transpose(1, 2)


class FlipSketchAttnProcessor:
    """Self-attention with FlipSketch's reference recording and composition."""

    def __init__(self, name: str, kind: str, control: CompositionControl) -> None:
        self.name = name
        self.kind = kind
        self.control = control

    def __call__(self, attn: Any, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        ctl = self.control
        ctl.check_cancel()
        query = attn.to_q(hidden_states)
        key = attn.to_k(hidden_states)
        value = attn.to_v(hidden_states)
        bias = None
        if ctl.mode is Mode.RECORD:
            ctl.records[self.name] = (query if self.kind == "spatial" else key[:, 0]).detach()
        elif ctl.mode is Mode.COMPOSE:
            if self.kind == "spatial" and ctl.use_spatial:
                query = self._compose_spatial(query)
            elif self.kind == "temporal" and ctl.use_temporal:
                key, bias = self._compose_temporal(query, key, attn)
        q, k, v = (_heads(t, attn.heads) for t in (query, key, value))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        out = out.transpose(1, 2).reshape(hidden_states.shape[0], -1, attn.heads * q.shape[-1]).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if attn.residual_connection:
            out = out + hidden_states
        return out / attn.rescale_output_factor

    def _compose_spatial(self, query: torch.Tensor) -> torch.Tensor:
        """C^S: frames 0..N-1 of the conditional samples query with the reference.

        Spatial attention sees (samples·frames, tokens, channels). The record is
        one reference frame (given to all N frames) or a reference video of F
        frames (the released construction: frame k takes reference frame k)."""
        ctl = self.control
        ref = ctl.records[self.name][: ctl.spatial_frames]  # (1 or N, tokens, channels)
        query = query.clone()
        view = query.view(-1, ctl.num_frames, *query.shape[1:])
        view[ctl.cond, : ctl.spatial_frames] = ref.to(query.dtype)
        return query

    def _compose_temporal(self, query: torch.Tensor, key: torch.Tensor, attn: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """C^T: reference key at frame 0 and scaled logits to it.

        Temporal attention sees (samples·tokens, frames, channels)."""
        ctl = self.control
        ref = ctl.records[self.name]  # (tokens, channels)
        tokens = ref.shape[0]
        key = key.clone()
        key.view(-1, tokens, *key.shape[1:])[ctl.cond, :, 0] = ref.to(key.dtype)
        q, k = _heads(query, attn.heads), _heads(key, attn.heads)
        logit0 = (q @ k[:, :, :1].transpose(-1, -2)).squeeze(-1) * attn.scale  # (B, heads, F)
        extra = torch.zeros_like(logit0)
        scale = ctl.logit_scale.to(device=logit0.device, dtype=logit0.dtype)
        extra.view(-1, tokens, *extra.shape[1:])[ctl.cond] = (scale - 1.0) * logit0.view(-1, tokens, *logit0.shape[1:])[
            ctl.cond
        ]
        bias = torch.zeros(*logit0.shape, logit0.shape[-1], dtype=query.dtype, device=query.device)
        bias[..., 0] = extra
        return key, bias


@contextmanager
def flipsketch_attention(unet: torch.nn.Module, control: CompositionControl) -> Iterator[dict[str, str]]:
    """Install FlipSketch processors on every attn1 layer (by name) for the
    duration of a run; the UNet's own processors come back even on error."""
    original = unet.attn_processors
    kinds = classify_attn1(unet)
    processors = dict(original)
    for name, kind in kinds.items():
        processors[f"{name}.processor"] = FlipSketchAttnProcessor(name, kind, control)
    unet.set_attn_processor(processors)
    try:
        yield kinds
    finally:
        unet.set_attn_processor(original)
