"""Tokenizers from scratch (Lecture 8): byte-level BPE trainers, and GPT-2 / GPT-4 rebuilt from OpenAI's files.

`from helpers.tokenizers import BasicTokenizer, RegexTokenizer, gpt2_tokenizer, gpt4_tokenizer, CharTokenizer`
"""
from .base import Tokenizer
from .basic import BasicTokenizer
from .char import CharTokenizer
from .pretrained import gpt2_tokenizer, gpt4_tokenizer, recover_merges
from .regex_bpe import GPT2_SPLIT_PATTERN, GPT4_SPLIT_PATTERN, RegexTokenizer

__all__ = ["BasicTokenizer", "CharTokenizer", "GPT2_SPLIT_PATTERN", "GPT4_SPLIT_PATTERN", "RegexTokenizer",
           "Tokenizer", "gpt2_tokenizer", "gpt4_tokenizer", "recover_merges"]
