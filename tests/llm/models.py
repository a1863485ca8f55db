"""Small random causal LMs (Llama, GPT-2) from configs and a word-level tokenizer: no downloads."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

SPECIAL = ["[UNK]", "<s>", "</s>", "[PAD]"]
WORDS = ("the a cat dog sat on mat ran to park is big small and in of it was very "
         "<b> & tom").split()
UNK, BOS, EOS, PAD = range(4)


def word_tokenizer(bos: bool = True) -> PreTrainedTokenizerFast:
    """Whitespace-split words, id 0 unknown; BOS prepended (as Llama's tokenizer does)."""
    vocab = {w: i for i, w in enumerate(SPECIAL + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A",
                                                           special_tokens=[("<s>", BOS)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", bos_token="<s>",
                                   eos_token="</s>", pad_token="[PAD]")


VOCAB = len(SPECIAL) + len(WORDS)
IDS = dict(bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)


def llama(seed: int = 0, vocab: int = VOCAB, hidden: int = 32, layers: int = 2,
          dtype: torch.dtype = torch.float64) -> LlamaForCausalLM:
    """A 2-layer Llama with grouped-query attention (4 heads, 2 key-value heads), eval mode."""
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, **IDS)
    return LlamaForCausalLM(config).to(dtype).eval()


def gpt2(seed: int = 0, vocab: int = VOCAB, hidden: int = 32, layers: int = 2,
         dtype: torch.dtype = torch.float64) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=4,
                        n_positions=256, **IDS)
    return GPT2LMHeadModel(config).to(dtype).eval()


def embedding_name(model: torch.nn.Module) -> str:
    return "model.embed_tokens" if isinstance(model, LlamaForCausalLM) else "transformer.wte"


def rel_err(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    theirs = theirs.to(ours.dtype)
    return float((ours - theirs).abs().max() / theirs.abs().max())
