"""The demo (``python -m attnkern.demo``): data, model, training, CLI, checkpoints, torchrun.

Everything here is small (tiny models, a few steps); the full run is documented in
docs/demo.md.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import attnkern
from attnkern.demo.data import (
    EOS,
    PAD,
    VOCAB_SIZE,
    SentenceSampler,
    decode_ids,
    make_batch,
    normalize_sentence,
    reverse_words,
    split_words,
)
from attnkern.demo.model import ModelConfig, Seq2Seq, load_checkpoint, save_checkpoint
from attnkern.demo.train import evaluate, train, translate
from attnkern.demo.words import WORDS

REPO = Path(attnkern.__file__).resolve().parent.parent
TINY = dict(embed_dim=16, enc_hidden=32, dec_hidden=64, attn_hidden=32, pos_dim=8,
            value_embed=True)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.filterwarnings("ignore:attnkern._C is not built")


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models: a second OpenMP thread only adds stalls on a shared 2-core box.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"
    return env


def _run(args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\n" \
                                 f"stderr:\n{proc.stderr[-4000:]}"
    return proc


def _check_png(path: Path, min_bytes: int = 5000) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert len(data) >= min_bytes, f"{path} is only {len(data)} bytes"
    # IHDR: width and height (big-endian) right after the signature and chunk header.
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= 300 and height >= 300, (width, height)


# data ---------------------------------------------------------------------------------


def test_reverse_words_keeps_word_order():
    assert reverse_words("the cat sat on the mat") == "eht tac tas no eht tam"
    assert reverse_words("a") == "a"
    assert reverse_words("don't stop") == "t'nod pots"


def test_normalize_sentence():
    assert normalize_sentence("  The  Cat\tsat ") == "the cat sat"
    with pytest.raises(ValueError, match="does not know"):
        normalize_sentence("hello, world")
    with pytest.raises(ValueError, match="empty"):
        normalize_sentence("   ")


def test_word_list_is_plain_lowercase():
    assert len(WORDS) >= 3000
    assert len(set(WORDS)) == len(WORDS)
    assert all(re.fullmatch(r"[a-z']+", w) for w in WORDS)
    assert set("".join(WORDS)) >= set("abcdefghijklmnopqrstuvwxyz")
    assert max(map(len, WORDS)) >= 14  # long words are in the training mix


def test_heldout_words_never_in_training_sentences():
    train_words, heldout = split_words()
    assert not set(train_words) & set(heldout)
    assert len(heldout) >= 300
    assert set(train_words) | set(heldout) == set(WORDS)
    assert split_words() == (train_words, heldout)  # fixed split, whatever the seed
    held = set(heldout)
    sampler = SentenceSampler(train_words, seed=3)
    seen = set()
    for batch in sampler.batches(64, pool=8):
        for s in batch:
            words = s.split(" ")
            assert 1 <= len(words) <= 8
            seen.update(words)
    assert not seen & held
    assert len(seen) > 1000


def test_make_batch_layout():
    b = make_batch(["ab c", "xyz"])
    assert b.src.shape == (2, 5) and b.src_lengths.tolist() == [5, 4]
    assert b.src[1, 3].item() == EOS and b.src[1, 4].item() == PAD
    assert decode_ids(b.tgt_out[0].tolist()) == "ba c"
    assert decode_ids(b.tgt_out[1].tolist()) == "zyx"
    assert b.tgt_out[1, 3].item() == EOS and b.tgt_out[1, 4].item() == PAD
    assert torch.equal(b.tgt_in[:, 1:4], b.tgt_out[:, :3])


# model and training -------------------------------------------------------------------


def test_model_uses_the_layer_with_projected_keys(monkeypatch):
    model = Seq2Seq(ModelConfig(**TINY))
    assert isinstance(model.attention, attnkern.AdditiveAttention)
    calls = {"project": 0, "forward": []}
    real_project = model.attention.project_keys
    real_forward = model.attention.forward

    def project(keys):
        calls["project"] += 1
        return real_project(keys)

    def forward(query, keys, values=None, **kw):
        calls["forward"].append((query.dim(), kw.get("projected_keys") is not None,
                                 kw.get("key_lengths") is not None))
        return real_forward(query, keys, values, **kw)

    monkeypatch.setattr(model.attention, "project_keys", project)
    monkeypatch.setattr(model.attention, "forward", forward)
    b = make_batch(["the cat", "a dog ran"])
    logits = model(b.src, b.src_lengths, b.tgt_in)
    assert logits.shape == (2, b.tgt_in.shape[1], VOCAB_SIZE)
    assert calls["project"] == 1  # once per batch, not per step
    assert calls["forward"] == [(2, True, True)] * b.tgt_in.shape[1]


def test_short_training_loss_falls_and_accuracy_beats_chance():
    torch.manual_seed(0)
    train_words, heldout = split_words()
    model = Seq2Seq(ModelConfig(**TINY))
    # One-word sentences: short to decode, and enough to see the reversal being learned.
    sampler = SentenceSampler(train_words, max_words=1, seed=0)
    probe = make_batch(SentenceSampler(heldout, max_words=1, seed=1).sentences(64))

    def token_accuracy() -> float:
        model.eval()
        with torch.no_grad():
            pred = model(probe.src, probe.src_lengths, probe.tgt_in).argmax(-1)
        mask = probe.tgt_out != PAD
        return (pred[mask] == probe.tgt_out[mask]).float().mean().item()

    before = token_accuracy()
    result = train(model, sampler, steps=100, batch_size=32, lr=1e-2, progress=False)
    after = token_accuracy()
    first, last = result.losses[:10], result.losses[-10:]
    assert sum(last) / 10 < 0.5 * sum(first) / 10, (first, last)
    chance = 1.0 / (VOCAB_SIZE - 2)
    assert before < 3 * chance
    assert after > 0.4, f"teacher-forced accuracy {after:.3f} (chance {chance:.3f})"
    ev = evaluate(model, SentenceSampler(heldout, max_words=1, seed=2).sentences(32))
    assert ev.char > 3 * chance, ev.char


@pytest.mark.parametrize("attention", [True, False], ids=["attention", "baseline"])
def test_batched_decoding_equals_one_by_one(attention):
    # float64 so that the only way to differ is a real leak of padding between rows.
    torch.manual_seed(1)
    model = Seq2Seq(ModelConfig(attention=attention, **TINY)).double().eval()
    train_words, _ = split_words()
    sents = SentenceSampler(train_words, seed=5).sentences(12) + ["a", "i am"]
    batch = make_batch(sents)
    ids, weights = model.greedy(batch.src, batch.src_lengths, max_len=30, need_weights=True)
    for row, s in enumerate(sents):
        single = make_batch([s])
        ids1, w1 = model.greedy(single.src, single.src_lengths, max_len=30, need_weights=True)
        assert decode_ids(ids[row].tolist()) == decode_ids(ids1[0].tolist()), s
        if attention:
            steps, keys = w1.shape[1], w1.shape[2]
            torch.testing.assert_close(weights[row, :steps, :keys], w1[0])
            assert not weights[row, :steps, keys:].any()  # padding gets no weight
    # The batched translate helper (length-sorted batches of any size) agrees as well.
    assert translate(model, sents, batch_size=3) == translate(model, sents, batch_size=64)


def test_trained_model_batching_independent_float32():
    torch.manual_seed(2)
    train_words, heldout = split_words()
    model = Seq2Seq(ModelConfig(**TINY))
    train(model, SentenceSampler(train_words, max_words=2, seed=0), steps=30, batch_size=32,
          lr=1e-2, progress=False)
    sents = SentenceSampler(heldout, max_words=4, seed=9).sentences(40)
    one_batch = translate(model, sents, batch_size=len(sents))
    singles = [translate(model, [s], batch_size=1)[0] for s in sents]
    assert one_batch == singles


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(3)
    models = {"attention": Seq2Seq(ModelConfig(**TINY)),
              "baseline": Seq2Seq(ModelConfig(attention=False, **TINY))}
    path = tmp_path / "demo.pt"
    save_checkpoint(str(path), models, {"steps": 7})
    loaded, meta = load_checkpoint(str(path))
    assert meta == {"steps": 7}
    sents = ["the cat sat on the mat", "hello world", "x"]
    for name, model in models.items():
        assert loaded[name].config == model.config
        for (k, v), (k2, v2) in zip(model.state_dict().items(), loaded[name].state_dict().items()):
            assert k == k2 and torch.equal(v, v2)
        assert translate(loaded[name], sents) == translate(model.eval(), sents)
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an attnkern demo checkpoint"):
        load_checkpoint(str(tmp_path / "other.pt"))


# command line -------------------------------------------------------------------------


def _io_lines(stdout: str) -> list[tuple[str, str]]:
    return [tuple(line.split(" -> ")) for line in stdout.splitlines() if " -> " in line]


def test_cli_prints_lines_and_writes_pngs(tmp_path):
    out = tmp_path / "out"
    ckpt = tmp_path / "demo.pt"
    proc = _run([sys.executable, "-m", "attnkern.demo", "--steps", "4", "--eval-size", "16",
                 "--sentence", "hello world", "--sentence", "The  quick brown fox",
                 "--out", str(out), "--no-baseline", "--quiet", "--save", str(ckpt)],
                cwd=tmp_path)
    lines = _io_lines(proc.stdout)
    assert [inp for inp, _ in lines] == ["hello world", "the quick brown fox"], proc.stdout
    assert all(re.fullmatch(r"[a-z' ]*", o) for _, o in lines)
    assert "exact match" in proc.stdout and "character accuracy" in proc.stdout
    _check_png(out / "attention.png")
    assert not (out / "accuracy_vs_length.png").exists()

    # --load skips training and reproduces the outputs exactly.
    out2 = tmp_path / "out2"
    proc2 = _run([sys.executable, "-m", "attnkern.demo", "--load", str(ckpt), "--eval-size",
                  "16", "--sentence", "hello world", "--sentence", "The  quick brown fox",
                  "--out", str(out2), "--no-baseline", "--quiet"], cwd=tmp_path)
    assert _io_lines(proc2.stdout) == lines
    assert "skipping training" in proc2.stdout and "parameters," not in proc2.stdout
    _check_png(out2 / "attention.png")


def test_cli_default_sentence_with_baseline(tmp_path):
    proc = _run([sys.executable, "-m", "attnkern.demo", "--steps", "3", "--eval-size", "16",
                 "--quiet"], cwd=tmp_path)
    lines = _io_lines(proc.stdout)
    assert [inp for inp, _ in lines] == ["the cat sat on the mat"]
    assert "no attention" in proc.stdout
    _check_png(tmp_path / "demo_out" / "attention.png")
    _check_png(tmp_path / "demo_out" / "accuracy_vs_length.png")


def test_cli_rejects_unknown_characters(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "attnkern.demo", "--sentence", "hi, 42"],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "does not know" in proc.stderr


def test_torchrun_two_processes_gloo(tmp_path):
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    torchrun = [sys.executable, "-m", "torch.distributed.run"]  # the `torchrun` script
    out = tmp_path / "out"
    proc = _run(torchrun + ["--standalone", "--nproc_per_node=2", "-m", "attnkern.demo",
                            "--device", "cpu", "--steps", "3", "--batch-size", "8",
                            "--eval-size", "16", "--no-baseline", "--quiet",
                            "--sentence", "the cat", "--out", str(out)], cwd=tmp_path)
    # Only rank 0 prints and writes.
    assert [inp for inp, _ in _io_lines(proc.stdout)] == ["the cat"], proc.stdout
    assert "2 processes" in proc.stdout
    assert proc.stdout.count("held-out") == 1
    _check_png(out / "attention.png")


def test_long_sentences_are_decoded_in_chunks(monkeypatch):
    from attnkern.demo import cli

    seen: list[str] = []

    def fake_translate(model, chunks, **kw):
        seen.extend(chunks)
        return [reverse_words(c) for c in chunks]

    monkeypatch.setattr(cli, "translate", fake_translate)
    long = normalize_sentence(" ".join("abcdefghijklmnopqrs"[i] * 3 for i in range(19)))
    short = "the cat"
    assert cli.reverse_sentences(None, [long, short]) == [reverse_words(long), "eht tac"]
    assert max(len(c.split(" ")) for c in seen) <= cli.TRAIN_MAX_WORDS
    assert len(seen) == -(-19 // cli.TRAIN_MAX_WORDS) + 1
