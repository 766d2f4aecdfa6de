"""Sequence models from scratch (Module 0.4, reused by 0.5 and later): one idea per file.

recurrent.py  the unrolling loop shared by every recurrent layer (torch's parameter names and init)
rnn.py        the vanilla (Elman) cell and its hand-written backpropagation through time
lstm.py       the LSTM cell: forget / input / output gates and the cell state
gru.py        the GRU cell: reset and update gates
bidirectional.py  a forward and a time-reversed layer side by side
attention.py  masked softmax, additive (Bahdanau) and multiplicative (Luong) attention
seq2seq.py    an encoder-decoder with or without attention
charlm.py     character-level language models (RNN / LSTM / GRU / attention-LSTM)
tasks.py      synthetic sequence tasks (reversal, adding problem)
gradient_flow.py  how far back a gradient reaches: |dh_T/dh_t| against T - t
(Module 0.5 adds positional.py, transformer.py and translate.py; import them from their files.)
"""
from .attention import AdditiveAttention, MultiplicativeAttention, masked_softmax
from .bidirectional import Bidirectional
from .charlm import CharLM
from .gru import GRU, gru_cell
from .lstm import LSTM, lstm_cell
from .recurrent import Recurrent
from .rnn import RNN, rnn_bptt, rnn_cell
from .seq2seq import Seq2Seq

__all__ = ["AdditiveAttention", "Bidirectional", "CharLM", "GRU", "LSTM", "MultiplicativeAttention", "RNN",
           "Recurrent", "Seq2Seq", "gru_cell", "lstm_cell", "masked_softmax", "rnn_bptt", "rnn_cell"]
