"""LoRA adapters (rlhf.models.lora): an adapter starts as the model it wraps, trains alone, and
saves as a plain checkpoint that transformers loads to the same outputs, for a language model
and for a reward model (whose score head trains whole beside the adapter)."""

import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from rlhf.models.batching import right_pad
from rlhf.models.config import Lora
from rlhf.models.lora import ADAPTER, save_model, trainable_fraction, with_adapter
from rlhf.models.reward import build_reward_model, scores, token_scores
from tests.models.conftest import PROMPTS

CFG = Lora(rank=4, alpha=8)


def batch(tok):
    """Two prompts, right-padded (a reward model reads the last real token)."""
    return right_pad([tok(p)["input_ids"] for p in PROMPTS[:2]], tok.pad_token_id)


def nudge(model) -> None:
    """Move every trainable weight, as training would (LoRA's B starts at zero)."""
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))


def test_a_language_model_adapter_trains_alone_and_saves_as_plain_weights(tok, lm, tmp_path):
    ids, mask = batch(tok)
    before = lm(input_ids=ids, attention_mask=mask).logits
    adapted = with_adapter(lm, CFG)
    torch.testing.assert_close(adapted(input_ids=ids, attention_mask=mask).logits, before)
    trainable = [n for n, p in adapted.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert 0 < trainable_fraction(adapted) < 0.5

    nudge(adapted)
    after = adapted(input_ids=ids, attention_mask=mask).logits
    assert not torch.allclose(after, before)
    save_model(adapted, tok, tmp_path / "model")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    assert not any("lora" in k for k in plain.state_dict())
    torch.testing.assert_close(
        plain(input_ids=ids, attention_mask=mask).logits, after, atol=1e-4, rtol=1e-4
    )
    assert (tmp_path / "model" / ADAPTER / "adapter_config.json").is_file()
    adapted.unload()  # the module-scoped lm again without its adapter layers


def test_a_reward_model_adapter_trains_its_head_and_saves_as_a_plain_classifier(tok, lm, tmp_path):
    lm.save_pretrained(tmp_path / "sft")
    tok.save_pretrained(tmp_path / "sft")
    rm = with_adapter(build_reward_model(str(tmp_path / "sft"), tok), CFG, classifier=True)
    trainable = [n for n, p in rm.named_parameters() if p.requires_grad]
    assert any("score" in n for n in trainable)
    assert all("lora_" in n or "score" in n for n in trainable)
    nudge(rm)
    rm.eval()
    ids, mask = batch(tok)
    want = scores(rm, ids, mask)

    # token_scores reads the head as it computes: at each row's last real token, the score
    last = mask.sum(1) - 1
    causal = torch.tril(torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool))
    allowed = (causal & mask[:, None, :].bool())[:, None]
    positions = torch.arange(ids.shape[1]).expand_as(ids)
    every = token_scores(rm, ids, allowed, positions)
    torch.testing.assert_close(every[torch.arange(len(ids)), last], want, atol=1e-4, rtol=1e-4)

    save_model(rm, tok, tmp_path / "reward")
    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "reward").eval()
    assert not any("lora" in k or "modules_to_save" in k for k in plain.state_dict())
    torch.testing.assert_close(scores(plain, ids, mask), want, atol=1e-4, rtol=1e-4)
