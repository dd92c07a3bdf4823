"""Train the course tokenizer: byte-level BPE over the generated corpus, digits split one by one."""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

#: BOS and EOS, as in GPT-2: documents are separated by it and it is never added automatically.
END_OF_TEXT = "<|endoftext|>"


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048, context_length: int = 256) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``texts`` (ids: ``<|endoftext|>`` = 0, bytes, merges).

    Digits are split into single-digit tokens so that arithmetic is done digit by digit.
    The vocabulary may stop short of ``vocab_size`` when the corpus has no more merges to make.
    """
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False),
    ])
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=END_OF_TEXT, eos_token=END_OF_TEXT, model_max_length=context_length)
