"""helpers/formats/onnx_export.py against ONNX Runtime: the exported graph computes what PyTorch computes."""
import numpy as np
import pytest
import torch

from helpers.formats import onnx_export as ox
from helpers.models.gpt import GPT, GPTConfig


@pytest.fixture(scope="module")
def gpt():
    torch.manual_seed(0)
    return GPT(GPTConfig(block_size=64, vocab_size=256, n_layer=2, n_head=4, n_embd=64)).eval()


@pytest.fixture(scope="module")
def gpt_onnx(gpt, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "gpt.onnx"
    return ox.export(ox.LogitsOnly(gpt), torch.zeros(1, 8, dtype=torch.long), path)


def torch_logits(model, ids):
    with torch.no_grad():
        return model(ids)[0].numpy()


def test_gpt_export_matches_torch_at_several_shapes(gpt, gpt_onnx):
    lm = ox.OrtLM(gpt_onnx, threads=1)
    g = torch.Generator().manual_seed(1)
    for b in (1, 3):
        for t in (1, 17, 64):  # 1: a single token; 64: the whole block; none is the example's 8
            ids = torch.randint(0, 256, (b, t), generator=g)
            got = lm(ids).logits.numpy()
            # fp32 both sides, only the summation order differs: ~1e-6 relative on logits of size ~1
            np.testing.assert_allclose(got, torch_logits(gpt, ids), atol=1e-4, rtol=0)


def test_graph_input_axes_are_symbolic(gpt_onnx):
    sig = ox.io_signature(ox.session(gpt_onnx, threads=1))
    assert sig[0] == "in  input_ids: tensor(int64) ['batch', 'seq']"
    assert sig[1] == "out logits: tensor(float) ['batch', 'seq', 256]"


def test_forgotten_dynamic_axis_fails_at_another_length(gpt, tmp_path):
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

    path = ox.export(ox.LogitsOnly(gpt), torch.zeros(1, 8, dtype=torch.long), tmp_path / "fixed.onnx", dynamic=False)
    lm = ox.OrtLM(path, threads=1)
    ok = torch.randint(0, 256, (1, 8))
    np.testing.assert_allclose(lm(ok).logits.numpy(), torch_logits(gpt, ok), atol=1e-4, rtol=0)
    with pytest.raises(InvalidArgument, match="input_ids"):
        lm(torch.randint(0, 256, (1, 9)))


def test_initializers_hold_the_torch_weights_exactly(gpt, gpt_onnx):
    inits = ox.initializers(gpt_onnx)
    w = gpt.transformer.h[0].mlp.c_fc.weight.detach().numpy()  # (4C, C); the graph may store it transposed
    assert any(a.shape in (w.shape, w.T.shape) and (np.array_equal(a, w) or np.array_equal(a, w.T))
               for a in inits.values())


def test_int8_dynamic_quantization_smaller_and_close(gpt, gpt_onnx, tmp_path):
    q = ox.quantize_int8(gpt_onnx, tmp_path / "int8.onnx")
    hist = ox.op_histogram(q)
    n_linear = 2 * 4 + 1  # per block: c_attn, c_proj, c_fc, mlp.c_proj; plus lm_head
    assert hist["MatMulInteger"] == n_linear and hist["MatMul"] == ox.op_histogram(gpt_onnx)["MatMul"] - n_linear
    # closed form: each MatMul weight goes from 4 bytes to 1 per value, plus a float32 scale and an int8 zero point;
    # every other stored tensor is untouched. Exact, in bytes.
    fp32, int8 = ox.initializers(gpt_onnx), ox.initializers(q)
    n_w = sum(m.weight.numel() for m in gpt.modules() if isinstance(m, torch.nn.Linear))
    expected = sum(a.nbytes for a in fp32.values()) - 4 * n_w + n_w + n_linear * (4 + 1)
    assert sum(a.nbytes for a in int8.values()) == expected
    assert ox.file_mb(q) < 0.5 * ox.file_mb(gpt_onnx)
    ids = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(2))
    ref = torch_logits(gpt, ids)
    got = ox.OrtLM(q, threads=1)(ids).logits.numpy()
    # 8-bit weights and activations: each matmul carries ~2^-8 relative error; a few % on the logits at most
    rel = np.linalg.norm(got - ref) / np.linalg.norm(ref)
    assert rel < 0.05, rel


def test_quantize_exclude_keeps_named_nodes_float(gpt_onnx, tmp_path):
    head = ox.node_names(gpt_onnx, "MatMul", "lm_head")
    assert head == ["/model/lm_head/MatMul"]
    q = ox.quantize_int8(gpt_onnx, tmp_path / "int8.onnx", exclude=head)
    assert ox.op_histogram(q)["MatMulInteger"] == 2 * 4 and "/model/lm_head/MatMul" in ox.node_names(q, "MatMul")


def test_fusible_pairs_counts_linear_bias(gpt_onnx):
    pairs = ox.fusible_pairs(gpt_onnx)
    # per block: the four biased linears (x @ W + b) and the attention scores plus the causal mask (q @ k^T + mask);
    # lm_head has no bias
    assert pairs["MatMul+Add"] == 2 * (4 + 1)
    assert pairs["Softmax+MatMul"] == 2  # softmax(scores) @ v


def test_bad_inputs_raise_clear_errors(gpt, tmp_path):
    with pytest.raises(ValueError, match="example inputs"):
        ox.export(ox.LogitsOnly(gpt), (torch.zeros(1, 4, dtype=torch.long),) * 2, tmp_path / "x.onnx")
    with pytest.raises(FileNotFoundError, match="export"):
        ox.session(tmp_path / "missing.onnx")


@pytest.mark.slow
def test_smollm2_export_matches_torch(tmp_path):
    from helpers import llm

    model, _ = llm.load()
    path = ox.export(ox.LogitsOnly(model), torch.zeros(1, 8, dtype=torch.long), tmp_path / "smol.onnx")
    lm = ox.OrtLM(path, threads=1)
    for b, t in [(1, 5), (2, 33)]:
        ids = torch.randint(0, 49152, (b, t), generator=torch.Generator().manual_seed(b))
        with torch.no_grad():
            ref = model(ids, use_cache=False).logits.numpy()
        # 30 layers of fp32 in another summation order: ~1e-5 relative on logits of magnitude ~30
        np.testing.assert_allclose(lm(ids).logits.numpy(), ref, atol=1e-3, rtol=0)


@pytest.mark.slow
def test_dynamo_exporter_also_matches_torch(gpt, tmp_path):
    path = ox.export(ox.LogitsOnly(gpt), torch.zeros(2, 8, dtype=torch.long), tmp_path / "dynamo.onnx", dynamo=True)
    lm = ox.OrtLM(path, threads=1)
    for b, t in [(1, 5), (3, 40)]:
        ids = torch.randint(0, 256, (b, t), generator=torch.Generator().manual_seed(t))
        np.testing.assert_allclose(lm(ids).logits.numpy(), torch_logits(gpt, ids), atol=1e-4, rtol=0)
