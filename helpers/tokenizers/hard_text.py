"""A stress text for tokenizers: scripts, emoji (with ZWJ sequences), odd whitespace, numbers, code, control
characters and a special-token string — the cases where a re-implementation drifts from tiktoken.

`HARD_CASES` names each case; `HARD_TEXT` is all of them in one string.
"""

HARD_CASES = {
    "ascii": "Hello world!!!",
    "greek": "ΓΕΙΑ σου",
    "emoji+zwj": "😀🎉👩\u200d👩\u200d👧",
    "math letters": "𝓤𝓷𝓲𝓬𝓸𝓭𝓮",
    "whitespace": "\t\ttabs\r\n\r\nCRLF   \n\n  trailing \u00a0nbsp \u200b",
    "numbers": "12345678 3.14159 1,000,000",
    "contractions": "I'm you'LL THEY'RE it's",
    "code": "def f(x):\n    return x**2  # code\n\tif a!=b: print(\"ok\")\n",
    "cjk/hangul/arabic": "中文字符 日本語 한국어 العربية",
    "control": "\x00\x01\x7f",
}
HARD_TEXT = " ".join(HARD_CASES.values()) + " <|endoftext|> end   "  # ends in a run of spaces (the \s++$ rule)
