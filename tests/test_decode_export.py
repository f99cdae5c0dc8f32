"""Exporting a Tacotron-2-style greedy decode (attnkern/decode.py) to ONNX: the per-step
graph with every state in and out, and the whole loop as one ONNX ``Loop`` (from
``torch._higher_order_ops.while_loop``); onnxruntime against PyTorch's eager decode."""

import math

import pytest
import torch
from torch.utils import _pytree as pytree

from attnkern.decode import TinyTacotronDecoder, WhileLoopDecoder

B, T, MAX_STEPS = 3, 9, 12
LENGTHS = torch.tensor([9, 6, 4])


def _need_onnx():  # the eager tests run without them
    for name in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(name)


def _close(got, want, what):
    assert len(got) == len(want), what
    for i, (a, b) in enumerate(zip(got, want)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5,
                                   msg=lambda m, i=i: f"{what} {i}: {m}")


def _decoder(seed=0):
    """A random decoder whose gate counts steps, so that the items stop at different steps.

    Decoder-LSTM unit 0 is a counter: input, forget and output gates saturated open, the
    candidate tanh(b) = 0.1, so ``dh[0] = tanh(0.1 k)`` after k steps. The gate is
    ``10 dh[0] + context[0] - 5`` and memory channel 0 is a per-item constant ``c_b`` (so
    ``context[0] = c_b`` whatever the weights): item b stops at the first k with
    ``tanh(0.1 k) > (5 - c_b) / 10``."""
    torch.manual_seed(seed)
    dec = TinyTacotronDecoder(backend="auto").eval()
    h = dec.decoder_dim
    rnn = dec.decoder_rnn
    with torch.no_grad():
        for w in (rnn.weight_ih, rnn.weight_hh):
            w[[0, h, 2 * h, 3 * h]] = 0
        rnn.bias_hh[[0, h, 2 * h, 3 * h]] = 0
        rnn.bias_ih[[0, h, 3 * h]] = 10.0
        rnn.bias_ih[2 * h] = math.atanh(0.1)
        dec.gate_layer.weight.zero_()
        dec.gate_layer.weight[0, 0] = 10.0
        dec.gate_layer.weight[0, h] = 1.0
        dec.gate_layer.bias.fill_(-5.0)
    memory = torch.randn(B, T, dec.embedding_dim)
    memory[:, :, 0] = torch.tensor([1.5, 0.0, -1.5])[:, None]
    return dec, memory


class DecodeStep(torch.nn.Module):
    def __init__(self, dec):
        super().__init__()
        self.dec = dec

    def forward(self, frame, ah, ac, dh, dc, context, state):
        return self.dec.decode_step(frame, ah, ac, dh, dc, context, state)


def _session(path):
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run(session, inputs):
    feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs, strict=True)}
    return [torch.from_numpy(a) for a in session.run(None, feeds)]


def test_eager_decode_stops_each_item_at_its_own_step():
    dec, memory = _decoder()
    with torch.no_grad():
        frames, gates, decoded = dec.decode(memory, LENGTHS, MAX_STEPS)
        free = dec.decode(memory, LENGTHS, MAX_STEPS, threshold=1.0)  # never stops
    assert decoded.tolist() == [4, 6, 8]  # tanh(0.1 k) > 0.35, 0.5, 0.65 at k = 4, 6, 8
    for b, n in enumerate(decoded.tolist()):
        # a stopped item's outputs are frozen at zeros; before, they are the free run's
        assert frames[b, n:].abs().sum() == 0 and gates[b, n:].abs().sum() == 0
        torch.testing.assert_close(frames[b, :n], free[0][b, :n], atol=0, rtol=0)
        torch.testing.assert_close(gates[b, :n], free[1][b, :n], atol=0, rtol=0)
        # an item decodes as it would alone (its own memory length, batch of one)
        alone = dec.decode(memory[b:b + 1, :LENGTHS[b]], LENGTHS[b:b + 1], MAX_STEPS)
        torch.testing.assert_close(alone[0][0], frames[b], atol=1e-6, rtol=1e-5)
        assert alone[2].item() == n


def test_bad_input_names_the_argument():
    dec, memory = _decoder()
    with pytest.raises(ValueError, match=r"memory must be .*got \(3, 9\)"):
        dec.decode(memory[:, :, 0], LENGTHS, MAX_STEPS)
    with pytest.raises(ValueError, match=r"lengths must be \(B=3,\) integer, got \(2,\)"):
        dec.decode(memory, LENGTHS[:2], MAX_STEPS)
    with pytest.raises(ValueError, match="lengths must be .*float32"):
        dec.decode(memory, LENGTHS.float(), MAX_STEPS)
    with pytest.raises(ValueError, match="max_steps must be a positive int, got 0"):
        dec.decode(memory, LENGTHS, 0)
    with pytest.raises(ValueError, match="max_steps"):
        WhileLoopDecoder(dec, 0)


def test_onnx_decode_step_with_every_state_in_and_out(tmp_path):
    """The decoder_iter.onnx contract: onnxruntime's step equals PyTorch's."""
    _need_onnx()
    dec, memory = _decoder()
    with torch.no_grad():
        states, att = dec.start(memory, LENGTHS)
        for _ in range(2):  # non-zero states
            frame, _, *rest, _, att = dec.decode_step(*states, att)
            states = (frame, *rest)
        path = tmp_path / "decoder_iter.onnx"
        torch.onnx.export(DecodeStep(dec).eval(), (*states, att), path, dynamo=True)
        got = _run(_session(path), [*states, *pytree.tree_leaves(att)])
        want = pytree.tree_leaves(dec.decode_step(*states, att))
    _close(got, want, "onnxruntime step")


def test_onnx_whole_loop_equals_eager_decode(tmp_path):
    """One ONNX graph with a Loop: onnxruntime's decode equals the eager one, for items
    with different memory lengths and stop steps; also with one item never stopping, and
    at another batch size and memory length (B and T exported as dynamic)."""
    _need_onnx()
    import onnx
    from torch.export import Dim

    dec, memory = _decoder()
    path = tmp_path / "decoder_loop.onnx"
    with torch.no_grad():
        batch, steps = Dim("B", min=2), Dim("T", min=2)
        torch.onnx.export(WhileLoopDecoder(dec, MAX_STEPS).eval(), (memory, LENGTHS), path,
                          dynamo=True, dynamic_shapes={"memory": {0: batch, 1: steps},
                                                       "lengths": {0: batch}})
        assert [n.op_type for n in onnx.load(str(path)).graph.node].count("Loop") == 1
        session = _session(path)
        want = dec.decode(memory, LENGTHS, MAX_STEPS)
        assert want[2].tolist() == [4, 6, 8]
        _close(_run(session, [memory, LENGTHS]), list(want), "onnxruntime loop")
        # item 2 never stops (c = -3: tanh(0.1 k) > 0.8 needs k = 11 > MAX_STEPS - 1):
        # the loop runs to MAX_STEPS
        memory[2, :, 0] = -4.0
        want = dec.decode(memory, LENGTHS, MAX_STEPS)
        assert want[2].tolist() == [4, 6, MAX_STEPS]
        _close(_run(session, [memory, LENGTHS]), list(want), "onnxruntime loop, no stop")
        # another shape, random lengths (the first item the longest)
        other = torch.randn(5, 13, dec.embedding_dim)
        lengths = torch.tensor([13, 2, 7, 13, 5])
        want = dec.decode(other, lengths, MAX_STEPS)
        _close(_run(session, [other, lengths]), list(want), "onnxruntime loop, B=5 T=13")
