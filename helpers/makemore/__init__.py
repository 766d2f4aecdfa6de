"""makemore (Karpathy, Lectures 2-6): character-level language models of names, one idea per file.

- `data`      vocabulary, Karpathy's 80/10/10 split, (context -> next char) examples
- `bigram`    the bigram model by counting and as a one-layer net; n-gram count models
- `layers`    torch-ified Linear / BatchNorm1d / Tanh / Embedding / FlattenConsecutive / Sequential
- `models`    the MLP of Lecture 3, the deep BatchNorm MLP of Lecture 4, the WaveNet of Lecture 6
- `train`     minibatch SGD with a schedule, the lr-range sweep, evaluation, sampling
- `diagnostics` Lecture 4's activation / gradient / update-ratio instruments
- `backprop`  Lecture 5: the MLP's gradients derived and written by hand
- `conv`      the WaveNet as dilated causal convolutions over a whole sequence
"""
