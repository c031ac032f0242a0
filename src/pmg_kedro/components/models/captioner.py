"""Item images as text (paper §3.2.1: x_i = LLM_g(v_{h_i}) through a caption model such as BLIP-2).

Two backends behind `caption_items`:
  * `metadata` (default): the caption written from the item's metadata (emoji name and keywords,
    Fashion-MNIST class and pixel attributes, movie title and genres) through a template.
  * `transformers`: a local image-captioning model folder (BLIP, BLIP-2 or any image-to-text model
    `AutoModelForImageTextToText` loads), run in batches on the item images.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from pmg_kedro.components.data.prompts import field_text, render

logger = logging.getLogger(__name__)


def metadata_captions(rows: Sequence[Mapping], template: str) -> list[str]:
    """Fill `template` ("{title} emoji ({keywords})") with each item's fields; lists are joined."""
    return [render(template, **{k: field_text(v) for k, v in row.items()}).strip() for row in rows]


class ImageCaptioner:
    """A local Hugging Face image-captioning model (BLIP / BLIP-2 / image-to-text), batched."""

    def __init__(
        self,
        model_path: str | Path,
        prompt: str | None = None,
        max_new_tokens: int = 24,
        batch_size: int = 16,
        dtype: str = "float32",
        device: str = "cpu",
    ):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        path = Path(model_path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path}: not a Hugging Face model folder (no config.json); set "
                "`captioner.model_path` in parameters_behavior_summarization.yml"
            )
        self.processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        self.model = (
            AutoModelForImageTextToText.from_pretrained(
                path, dtype=getattr(torch, dtype), local_files_only=True
            )
            .to(device)
            .eval()
        )
        self.prompt = prompt
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.name = path.name

    @torch.inference_mode()
    def caption(self, images: Sequence[Image.Image]) -> list[str]:
        """One caption per image, greedy decoding, prompt (if any) removed from the output."""
        captions: list[str] = []
        start = time.perf_counter()
        batches = range(0, len(images), self.batch_size)
        for b in tqdm(
            batches, desc=f"captions ({self.name})", unit="batch", disable=len(batches) < 2
        ):
            chunk = list(images[b : b + self.batch_size])
            kwargs = {"text": [self.prompt] * len(chunk)} if self.prompt else {}
            inputs = self.processor(images=chunk, return_tensors="pt", **kwargs).to(
                self.model.device
            )
            if "pixel_values" in inputs:
                inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
            output = self.model.generate(
                **inputs, max_new_tokens=self.max_new_tokens, do_sample=False
            )
            texts = self.processor.batch_decode(output, skip_special_tokens=True)
            for text in texts:
                if self.prompt and text.startswith(self.prompt):
                    text = text[len(self.prompt) :]
                captions.append(" ".join(text.split()))
        logger.info(
            "captioned %d images in %.1f s with %s",
            len(images),
            time.perf_counter() - start,
            self.name,
        )
        return captions
