"""A stress text for tokenizers: scripts, emoji (with ZWJ sequences), odd whitespace, numbers, code, control
characters and a special-token string — the cases where a re-implementation drifts from tiktoken."""

HARD_TEXT = ("Hello world!!! ΓΕΙΑ σου 😀🎉👩‍👩‍👧 𝓤𝓷𝓲𝓬𝓸𝓭𝓮\t\ttabs\r\n\r\nCRLF   \n\n  trailing \u00a0nbsp \u200b 12345678 "
             "3.14159 1,000,000 I'm you'LL THEY'RE it's\ndef f(x):\n    return x**2  # code\n\tif a!=b: print(\"ok\")\n"
             "中文字符 日本語 한국어 العربية \x00\x01 <|endoftext|> end   ")
