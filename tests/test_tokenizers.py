"""helpers/tokenizers: BPE training, tiktoken equality, round trips, special tokens, save/load, bad input."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers.tokenizers import BasicTokenizer, CharTokenizer, RegexTokenizer, gpt2_tokenizer, gpt4_tokenizer
from helpers.tokenizers.base import bpe, get_stats, merge, most_frequent
from helpers.tokenizers.hard_text import HARD_TEXT

HARD = HARD_TEXT
TEXT = "aaabdaaabac " * 3 + "the cat sat on the mat; the hat. " * 5


@pytest.fixture(scope="module")
def gpt2():
    return gpt2_tokenizer()


@pytest.fixture(scope="module")
def gpt4():
    return gpt4_tokenizer()


def test_primitives():
    assert get_stats([1, 2, 3, 1, 2]) == {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    assert merge([1, 2, 3, 1, 2], (1, 2), 4) == [4, 3, 4]
    assert merge([7, 7, 7], (7, 7), 8) == [8, 7]  # non-overlapping, left to right
    assert most_frequent({(5, 1): 3, (2, 9): 3, (0, 0): 1}) == (2, 9)  # ties -> smaller pair
    assert bpe([7, 7, 7, 7], {(7, 7): 256, (256, 256): 257}) == [257]


def test_basic_tokenizer_wikipedia_example():
    # Wikipedia's BPE example: "aaabdaaabac" -> Z=aa, Y=ab, X=ZY -> "XdXac"
    tok = BasicTokenizer().train("aaabdaaabac", 256 + 3)
    assert tok.encode("aaabdaaabac") == [258, 100, 258, 97, 99]
    assert tok.decode(tok.encode("aaabdaaabac")) == "aaabdaaabac"
    assert tok.vocab[258] == b"aaab"


def naive_regex_train(tok, text, vocab_size):
    chunks = [list(c.encode()) for c in tok._chunks(text)]
    merges = {}
    for i in range(vocab_size - 256):
        stats = {}
        for c in chunks:
            get_stats(c, stats)
        if not stats or max(stats.values()) < 2:
            break
        pair = most_frequent(stats)
        merges[pair] = 256 + i
        chunks = [merge(c, pair, 256 + i) for c in chunks]
    return merges


def test_regex_trainer_equals_naive_loop():
    text = TEXT + HARD * 2
    tok = RegexTokenizer().train(text, 320)
    assert tok.merges == naive_regex_train(tok, text, 320)
    assert tok.decode(tok.encode(text, allowed_special="none")) == text
    assert len(tok.encode(TEXT)) < len(TEXT.encode())  # it compresses


def test_tiktoken_equality_on_hard_text(gpt2, gpt4):
    from helpers.data import tiktoken_encoding

    for ours, name in ((gpt2, "gpt2"), (gpt4, "cl100k_base")):
        ref = tiktoken_encoding(name)
        assert ours.encode(HARD, allowed_special="all") == ref.encode(HARD, allowed_special="all")
        assert ours.encode_ordinary(HARD) == ref.encode_ordinary(HARD)
        assert ours.decode(ref.encode_ordinary(HARD)) == HARD


@settings(max_examples=30, deadline=None)
@given(st.text())
def test_round_trip_any_str(gpt4, s):
    assert gpt4.decode(gpt4.encode(s, allowed_special="none")) == s


@settings(max_examples=30, deadline=None)
@given(st.binary())
def test_round_trip_any_bytes(gpt2, b):
    assert gpt2.decode_bytes(gpt2.encode_bytes(b)) == b
    small = RegexTokenizer().train(TEXT, 280)
    assert small.decode_bytes(small.encode_bytes(b)) == b


@settings(max_examples=40, deadline=None)
@given(st.text(max_size=40))
def test_round_trip_trained_tokenizers(s):
    for tok in (BasicTokenizer().train(TEXT, 270), RegexTokenizer().train(TEXT, 270)):
        assert tok.decode(tok.encode(s)) == s


def test_special_tokens(gpt4):
    text = "hi<|endoftext|>there<|fim_prefix|>"
    with pytest.raises(ValueError, match="special token"):
        gpt4.encode(text)  # default "none_raise"
    assert gpt4.encode(text, allowed_special="all")[1] == 100257
    only_eot = gpt4.encode(text, allowed_special={"<|endoftext|>"})
    assert 100257 in only_eot and 100258 not in only_eot
    assert 100257 not in gpt4.encode(text, allowed_special="none")
    with pytest.raises(ValueError, match="unknown special"):
        gpt4.encode(text, allowed_special={"<|nope|>"})
    with pytest.raises(ValueError, match="allowed_special"):
        gpt4.encode(text, allowed_special="some")


def test_save_load(tmp_path):
    tok = RegexTokenizer().train(TEXT, 300)
    tok.register_special_tokens({"<|endoftext|>": 300})
    path = tok.save(tmp_path / "toy")
    assert path.name == "toy.model" and (tmp_path / "toy.vocab").exists()
    loaded = RegexTokenizer().load(path)
    assert loaded.merges == tok.merges and loaded.special_tokens == tok.special_tokens
    assert loaded.pattern == tok.pattern
    s = TEXT + "<|endoftext|>"
    assert loaded.encode(s, allowed_special="all") == tok.encode(s, allowed_special="all")
    with pytest.raises(ValueError, match=".model"):
        RegexTokenizer().load(tmp_path / "toy.vocab")


def test_bad_input(gpt2):
    assert gpt2.encode("") == [] and gpt2.decode([]) == ""
    with pytest.raises(ValueError, match="invalid token id"):
        gpt2.decode([50257])
    with pytest.raises(ValueError, match="invalid token id"):
        gpt2.decode([-1])
    with pytest.raises(TypeError):
        gpt2.encode(b"bytes")
    with pytest.raises(ValueError, match="vocab_size"):
        BasicTokenizer().train("abc", 100)
    with pytest.raises(ValueError, match="not in the vocabulary"):
        CharTokenizer("abc").encode("abd")
    with pytest.raises(ValueError, match="out of range"):
        CharTokenizer("abc").decode([3])
    with pytest.raises(ValueError, match="already used"):
        RegexTokenizer().train(TEXT, 300).register_special_tokens({"<|x|>": 260})


def test_truncated_equals_training_with_the_smaller_vocabulary():
    text = TEXT + HARD * 2
    big = RegexTokenizer().train(text, 330)
    big.register_special_tokens({"<|endoftext|>": 330})
    small = big.truncated(300)
    assert small.merges == RegexTokenizer().train(text, 300).merges
    assert small.vocab_size == 300 and small.special_tokens == {} and big.vocab_size == 331  # the original is untouched
    assert small.decode(small.encode(text, allowed_special="none")) == text
    with pytest.raises(ValueError, match="merges"):
        big.truncated(400)
