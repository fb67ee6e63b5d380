"""The shipped demo checkpoint: what it is, and that it still reaches the
full-precision accuracy recorded beside it when training it."""

import pytest

from tacq_ext.demo.evaluate import task_accuracy
from tacq_ext.demo.model import ASSET_DIR, load_demo_model, recorded_accuracy
from tacq_ext.demo.tasks import TASKS, load_split

@pytest.fixture(scope="module")
def shipped():
    return load_demo_model()


def test_checkpoint_is_a_small_gqa_llama(shipped):
    model, tokenizer = shipped
    config = model.config
    assert type(model).__name__ == "LlamaForCausalLM"
    assert config.num_key_value_heads < config.num_attention_heads
    assert config.hidden_size % 32 == 0 and config.intermediate_size % 32 == 0
    assert 1e6 < sum(p.numel() for p in model.parameters()) < 5e6
    assert sum(f.stat().st_size for f in ASSET_DIR.iterdir()) < 20e6
    assert tokenizer.decode(tokenizer.encode("SELECT 1;\n#### 7")) == "SELECT 1;\n#### 7"


@pytest.mark.parametrize("name", list(TASKS))
def test_checkpoint_reaches_recorded_accuracy(shipped, name):
    model, tokenizer = shipped
    record = recorded_accuracy()
    examples = load_split(name, "test", record["test_examples_per_task"])
    accuracy = task_accuracy(model, tokenizer, TASKS[name], examples, progress=False)
    # one example of slack for summation-order differences across thread counts
    assert accuracy >= record["accuracy"][name] - 1.5 / len(examples)


def test_facts_letter_is_read_after_the_decoded_paren(shipped):
    """choose_letters against an independent teacher-forced forward pass over
    the prompt and the decoded value up to its `(`."""
    import torch

    from tacq_ext.demo.evaluate import choose_letters, greedy_generate
    from tacq_ext.demo.tokenizer import BOS

    model, tokenizer = shipped
    prompts = [ex.prompt for ex in load_split("facts", "test", 6)]
    chosen = choose_letters(model, tokenizer, prompts, 12)
    for prompt, letter in zip(prompts, chosen):
        completion = greedy_generate(model, tokenizer, [prompt], 12)[0]
        prefix = completion[: completion.index("(") + 1]
        ids = torch.tensor([[BOS] + tokenizer.encode(prompt + prefix)])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, -1]
        scores = {l: float(logits[tokenizer.encode(l)[0]]) for l in "ABCD"}
        assert letter == max(scores, key=scores.get)
