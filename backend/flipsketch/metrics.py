"""How good an animation is: the paper's Table 1 metrics and an offline line similarity.

* **Sketch-to-video consistency** (`ClipScorer.consistency`): the mean cosine
  similarity between the CLIP image embedding of the input sketch and of each
  frame. The released code's filter uses `openai/clip-vit-base-patch32`.
* **Text-to-video alignment** (`XClipScorer.alignment`): the cosine similarity
  of X-CLIP's video and text embeddings (`microsoft/xclip-base-patch32`).
* **Chamfer similarity** (`chamfer_similarity`): needs no model. The symmetric
  chamfer distance between the ink of the sketch and of a frame, mapped to
  [0, 1]; it ranks variants when no CLIP model is configured.

Metric models load like the animation model (Hugging Face id or folder, from
the cache first; a clear error naming the download command when missing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from scipy.ndimage import distance_transform_edt

from flipsketch.errors import ModelCorruptError
from flipsketch.models import ModelSource, resolve_model_dir

CLIP_MODEL = "openai/clip-vit-base-patch32"
XCLIP_MODEL = "microsoft/xclip-base-patch32"
INK_LEVEL = 128  # grey values below this are ink
CHAMFER_SCALE = 0.1  # a mean distance of 10 % of the image diagonal scores 0


def ink(image: Image.Image, size: tuple[int, int] | None = None) -> np.ndarray:
    """Boolean ink mask (H, W) of a black-on-white drawing, optionally resized first."""
    gray = image.convert("L")
    if size is not None and gray.size != size:
        gray = gray.resize(size, Image.Resampling.LANCZOS)
    return np.asarray(gray) < INK_LEVEL


def chamfer_similarity(sketch: Image.Image, frame: Image.Image) -> float:
    """1 − d / (0.1 · diagonal), clipped to [0, 1], where d is the symmetric
    chamfer distance in pixels: the mean over both drawings of the distance
    from each ink pixel to the nearest ink pixel of the other. 1 = the same
    lines; 0 = lines 10 % of the diagonal apart on average, or no ink in one.
    The frame is compared at the sketch's size."""
    a = ink(sketch)
    b = ink(frame, size=(a.shape[1], a.shape[0]))
    if not a.any() or not b.any():
        return 0.0
    to_a, to_b = np.asarray(distance_transform_edt(~a)), np.asarray(distance_transform_edt(~b))  # scipy has no stubs
    distance = 0.5 * (to_b[a].mean() + to_a[b].mean())
    return float(max(0.0, 1.0 - distance / (CHAMFER_SCALE * np.hypot(a.shape[0], a.shape[1]))))


class ChamferScorer:
    """Offline variant score: mean chamfer similarity of the frames to the sketch."""

    method = "chamfer"

    def score(self, sketch: Image.Image, frames: list[Image.Image]) -> float:
        return float(np.mean([chamfer_similarity(sketch, frame) for frame in frames]))


def _load(source: str, classes: tuple[Any, Any], device: str) -> tuple[Any, Any]:
    import transformers

    transformers.utils.logging.disable_progress_bar()
    folder = resolve_model_dir(ModelSource(source), marker="config.json")
    model_cls, processor_cls = classes
    try:
        model = model_cls.from_pretrained(folder).to(device).eval().requires_grad_(False)
        processor = processor_cls.from_pretrained(folder)
    except (OSError, ValueError, KeyError) as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelCorruptError(
            f"The metric model in '{folder}' cannot be loaded as {model_cls.__name__}: {first_line}",
            f"Pass a {model_cls.__name__} folder or id (e.g. the published one), or download it again.",
        ) from None
    return model, processor


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


@dataclass
class ClipScorer:
    """A CLIP image model for sketch-to-video consistency (and variant ranking)."""

    model: Any  # transformers.CLIPModel
    processor: Any  # transformers.CLIPProcessor
    name: str

    @property
    def method(self) -> str:
        return f"clip:{self.name}"

    def image_embeddings(self, images: list[Image.Image]) -> torch.Tensor:
        """Unit-length CLIP image embeddings, (N, D)."""
        pixels = self.processor(images=[i.convert("RGB") for i in images], return_tensors="pt").pixel_values
        with torch.no_grad():
            features = self.model.get_image_features(pixel_values=pixels.to(self.model.device))
        features = getattr(features, "pooler_output", features)  # transformers 5 returns an output object
        return _unit(features.float().cpu())

    def consistency(self, sketch: Image.Image, frames: list[Image.Image]) -> float:
        """Mean cosine similarity of the sketch's embedding with each frame's, in [−1, 1]."""
        embeddings = self.image_embeddings([sketch, *frames])
        return float((embeddings[1:] @ embeddings[0]).mean())

    score = consistency


@dataclass
class XClipScorer:
    """An X-CLIP video–text model for text-to-video alignment."""

    model: Any  # transformers.XCLIPModel
    processor: Any  # transformers.XCLIPProcessor
    name: str

    def clip_frames(self, frames: list[Image.Image]) -> list[Image.Image]:
        """The frames X-CLIP sees: `num_frames` of them, evenly spaced (repeated when fewer)."""
        count = self.model.config.vision_config.num_frames
        picks = np.linspace(0, len(frames) - 1, count).round().astype(int)
        return [frames[i].convert("RGB") for i in picks]

    def alignment(self, frames: list[Image.Image], prompt: str) -> float:
        """Cosine similarity of the video embedding and the (video-conditioned)
        text embedding, in [−1, 1]."""
        # The published processor is VideoMAE's (one video -> (1, F, 3, H, W)); CLIP's gives (F, 3, H, W).
        pixels = self.processor.image_processor(self.clip_frames(frames), return_tensors="pt").pixel_values
        pixels = pixels if pixels.ndim == 5 else pixels[None]
        text = self.processor.tokenizer([prompt], padding=True, truncation=True, return_tensors="pt")
        device = self.model.device
        with torch.no_grad():
            out = self.model(
                input_ids=text.input_ids.to(device),
                attention_mask=text.attention_mask.to(device),
                pixel_values=pixels.to(device),
            )
        video, words = _unit(out.video_embeds.float()), _unit(out.text_embeds.float())  # (1, D), (1, 1, D)
        return float((video[:, None] * words).sum(-1).squeeze())


def load_clip(name: str = CLIP_MODEL, device: str = "cpu") -> ClipScorer:
    """A CLIP model from a Hugging Face id or folder (cache first)."""
    from transformers import CLIPModel, CLIPProcessor

    model, processor = _load(name, (CLIPModel, CLIPProcessor), device)
    return ClipScorer(model, processor, name)


def load_xclip(name: str = XCLIP_MODEL, device: str = "cpu") -> XClipScorer:
    """An X-CLIP model from a Hugging Face id or folder (cache first)."""
    from transformers import XCLIPModel, XCLIPProcessor

    model, processor = _load(name, (XCLIPModel, XCLIPProcessor), device)
    return XClipScorer(model, processor, name)
