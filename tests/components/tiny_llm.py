"""Tiny test models for the LLM paths: a random Llama with a Llama-2-style chat template, and a
scripted stand-in LLM whose answers are chosen by the test."""

from __future__ import annotations

import re
from pathlib import Path

from pmg_kedro.components.models.llm import GenerationStats

_WORDS_TEXT = """
comedy drama action horror romance animation war crime fantasy thriller western musical mystery
adventure children sci fi dark light medium patterned plain boot shirt dress coat bag sneaker sandal
trouser pullover cute happy sad smile face heart cat laugh cry wink movie poster likes the a with
and of
"""
WORDS = _WORDS_TEXT.split()
# Llama-2-chat's format: <s>[INST] <<SYS>> system <</SYS>> user [/INST] answer </s>
LLAMA2_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}<<SYS>> {{ message['content'] }} <</SYS>> "
    "{% elif message['role'] == 'user' %}[INST] {{ message['content'] }} [/INST]"
    "{% else %} {{ message['content'] }} {{ eos_token }}{% endif %}{% endfor %}"
)


def build_tiny_chat_llama(folder: Path, seed: int = 0) -> Path:
    """A Llama-architecture model (random init, 2 layers, hidden 32) with a word-level tokenizer
    and a Llama-2 chat template, saved as a Hugging Face folder like Llama-2-7B-chat's."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>"]
    vocab = {t: i for i, t in enumerate([*specials, ",", ".", ":", "-", *WORDS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        additional_special_tokens=specials[3:],
    )
    tokenizer.chat_template = LLAMA2_CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        initializer_range=0.2,  # peaked logits: greedy choices are not near-ties
        bos_token_id=vocab["<s>"],
        eos_token_id=vocab["</s>"],
        pad_token_id=None,  # like Llama-2: the component must supply one
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        # Larger output rows for "," and EOS: the random model then writes comma-separated words
        # and sometimes stops, so its (nonsense) answers look like keyword lists to the parser.
        model.lm_head.weight[vocab[","]] *= 4
        model.lm_head.weight[vocab["</s>"]] *= 2
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


class ScriptedLLM:
    """Stands in for `LLM` in node tests: answers come from (regex, answer) rules on the prompt."""

    def __init__(self, rules: list[tuple[str, str]], default: str = ""):
        self.rules = [(re.compile(p, re.S), a) for p, a in rules]
        self.default = default
        self.calls: list[tuple[list[str], object, str]] = []
        self.groups: list = []  # the `groups` argument of each call
        self.last_finished: list[bool] = []
        self.last_stats: GenerationStats | None = None

    def generate(
        self, messages, settings, answer_prefix: str = "", desc: str = "", groups=None
    ) -> list[str]:
        self.calls.append((list(messages), settings, answer_prefix))
        self.groups.append(None if groups is None else list(groups))
        answers = [next((a for p, a in self.rules if p.search(m)), self.default) for m in messages]
        self.last_finished = [True] * len(answers)
        self.last_stats = GenerationStats(len(answers), 0, 1.0, settings.batch_size)
        return answers

    def count_tokens(self, texts) -> list[int]:
        return [len(t.split()) for t in texts]
