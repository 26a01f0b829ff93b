#!/usr/bin/env python3
"""Golden cases for `torch.save` files, written by PyTorch itself, for
tests/frameworks.rs, tests/sequences.rs, tests/cli.rs and tests/hostile.rs.

    pip install torch numpy
    python3 tools/make_torch_goldens.py

CI does not run this script; its outputs are committed (written with torch
2.15.0, numpy 2.4.6). Each case directory under tests/golden/frameworks/
holds what tools/make_framework_goldens.py describes (x.npy, state_in.npz,
expected_y.npy, expected_state.npz, meta.json), with the weights as PyTorch
saved them:

    torch_pt_lstm       nn.LSTM(5, 7)                      torch.save(lstm.state_dict(), "weights.pt")
    torch_pt_proj       nn.LSTM(5, 8, proj_size=3)          ... "weights.pth"
    torch_pt_cell       nn.LSTMCell(4, 6), one step         ... "weights.bin"
    torch_pt_bn_prefix  Net(lstm=LSTM(4, 6), bn=BatchNorm1d(6)) after one training step
                        (bn.num_batches_tracked is int64), loaded with prefix "lstm" (no dot)
    torch_pt_fp16       nn.LSTM(5, 7).half(): weights.pt, and the same tensors as
                        weights_f16.npz (numpy <f2) and weights_f16.safetensors (F16)
    torch_pt_bf16       nn.LSTM(5, 7).bfloat16(): weights.pt and weights_bf16.safetensors (BF16)
    torch_pt_legacy     Net(lstm=LSTM(5, 7)), _use_new_zipfile_serialization=False
    torch_pt_views      nn.LSTM(3, 4) whose saved weight_ih_l0 is a transposed
                        (non-contiguous) view and whose biases share one storage
                        (bias_hh_l0 at a storage offset)

The fp16 and bf16 cases' expected outputs are PyTorch's float32 forward pass
over the 16-bit weights converted to float32 (a 16-bit forward pass would
round every activation; the loader converts the weights exactly, as here).

tests/golden/sequences/torch_pt_2layer_bidir: nn.LSTM(5, 6, num_layers=2,
bidirectional=True) inside a module (prefix "lstm."), as weights.pt.

tests/golden/bad_torch/: full_model.pt (torch.save(model) of a __main__.Net)
and lstm_module.pt (torch.save(nn.LSTM(3, 2))): whole pickled models, which
the loader must refuse with an error saying to save the state_dict.
"""

import json
import os
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_framework_goldens import save_case  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden")
FW = os.path.join(ROOT, "frameworks")


class Net(torch.nn.Module):
    def __init__(self, n, h, bn=False):
        super().__init__()
        self.lstm = torch.nn.LSTM(n, h)
        if bn:
            self.bn = torch.nn.BatchNorm1d(h)


def write_safetensors(path, tensors):
    """A safetensors file by hand: {name: (dtype, shape, raw little-endian bytes)}."""
    header, blobs, off = {}, [], 0
    for k, (dt, shape, b) in tensors.items():
        header[k] = {"dtype": dt, "shape": list(shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def run_lstm(lstm, n, h, r, t, b):
    x = torch.rand(t, b, n) * 4 - 2
    h0 = torch.rand(1, b, r) * 2 - 1
    c0 = torch.rand(1, b, h) * 2 - 1
    with torch.no_grad():
        y, (h1, c1) = lstm(x, (h0, c0))
    return x.numpy(), c0[0].numpy(), h0[0].numpy(), y.numpy(), c1[0].numpy(), h1[0].numpy()


def frameworks():
    torch.manual_seed(16)

    lstm = torch.nn.LSTM(5, 7)
    d = save_case("torch_pt_lstm", {"format": "pytorch", "prefix": ""}, *run_lstm(lstm, 5, 7, 7, 4, 3))
    torch.save(lstm.state_dict(), os.path.join(d, "weights.pt"))

    lstm = torch.nn.LSTM(5, 8, proj_size=3)
    d = save_case("torch_pt_proj", {"format": "pytorch", "prefix": ""}, *run_lstm(lstm, 5, 8, 3, 3, 2))
    torch.save(lstm.state_dict(), os.path.join(d, "weights.pth"))

    cell = torch.nn.LSTMCell(4, 6)
    x = torch.rand(5, 4) * 4 - 2
    h0, c0 = torch.rand(5, 6) * 2 - 1, torch.rand(5, 6) * 2 - 1
    with torch.no_grad():
        h1, c1 = cell(x, (h0, c0))
    d = save_case("torch_pt_cell", {"format": "pytorch", "prefix": ""}, x.numpy(), c0.numpy(), h0.numpy(), h1.numpy(), c1.numpy(), h1.numpy())
    torch.save(cell.state_dict(), os.path.join(d, "weights.bin"))

    net = Net(4, 6, bn=True)
    net.bn(torch.rand(3, 6))  # one training step: num_batches_tracked = 1 (int64)
    net.eval()
    d = save_case("torch_pt_bn_prefix", {"format": "pytorch", "prefix": "lstm"}, *run_lstm(net.lstm, 4, 6, 6, 3, 2))
    sd = net.state_dict()
    assert sd["bn.num_batches_tracked"].dtype == torch.int64
    torch.save(sd, os.path.join(d, "weights.pt"))

    for name, dtype, st in [("torch_pt_fp16", torch.float16, "F16"), ("torch_pt_bf16", torch.bfloat16, "BF16")]:
        lstm = torch.nn.LSTM(5, 7).to(dtype)
        sd = lstm.state_dict()
        ref = torch.nn.LSTM(5, 7)
        ref.load_state_dict({k: v.float() for k, v in sd.items()})
        d = save_case(name, {"format": "pytorch", "prefix": ""}, *run_lstm(ref, 5, 7, 7, 4, 2))
        torch.save(sd, os.path.join(d, "weights.pt"))
        raw = {k: (st, tuple(v.shape), v.contiguous().view(torch.int16).numpy().tobytes()) for k, v in sd.items()}
        write_safetensors(os.path.join(d, f"weights_{st.lower()}.safetensors"), raw)
        if dtype == torch.float16:
            np.savez(os.path.join(d, "weights_f16.npz"), **{k: v.numpy() for k, v in sd.items()})

    net = Net(5, 7)
    d = save_case("torch_pt_legacy", {"format": "pytorch", "prefix": "lstm."}, *run_lstm(net.lstm, 5, 7, 7, 3, 2))
    torch.save(net.state_dict(), os.path.join(d, "weights.pt"), _use_new_zipfile_serialization=False)

    lstm = torch.nn.LSTM(3, 4)
    d = save_case("torch_pt_views", {"format": "pytorch", "prefix": ""}, *run_lstm(lstm, 3, 4, 4, 3, 2))
    sd = {k: v.detach() for k, v in lstm.state_dict().items()}
    w = sd["weight_ih_l0"]
    sd["weight_ih_l0"] = w.t().contiguous().t()  # strides (1, 16)
    both = torch.cat([sd["bias_ih_l0"], sd["bias_hh_l0"]])
    sd["bias_ih_l0"], sd["bias_hh_l0"] = both[:16], both[16:]  # one storage, offset 16
    assert not sd["weight_ih_l0"].is_contiguous() and sd["bias_hh_l0"].storage_offset() == 16
    torch.save(sd, os.path.join(d, "weights.pt"))


def sequences():
    torch.manual_seed(17)
    lstm = torch.nn.LSTM(5, 6, num_layers=2, bidirectional=True)
    t, b = 4, 3
    x = torch.rand(t, b, 5) * 4 - 2
    h0 = torch.rand(4, b, 6) * 2 - 1
    c0 = torch.rand(4, b, 6) * 2 - 1
    with torch.no_grad():
        y, (hn, cn) = lstm(x, (h0, c0))
    d = os.path.join(ROOT, "sequences", "torch_pt_2layer_bidir")
    os.makedirs(d, exist_ok=True)
    np.save(os.path.join(d, "x.npy"), x.numpy())
    np.savez(os.path.join(d, "state_in.npz"), c=c0.numpy(), m=h0.numpy())
    np.save(os.path.join(d, "expected_y.npy"), y.numpy())
    np.savez(os.path.join(d, "expected_state.npz"), c=cn.numpy(), m=hn.numpy())
    wrap = torch.nn.Module()
    wrap.lstm = lstm
    torch.save(wrap.state_dict(), os.path.join(d, "weights.pt"))
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump({"format": "pytorch", "prefix": "lstm.", "batch_first": False}, f, indent=1, sort_keys=True)
        f.write("\n")


class FullNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(3, 2)


def bad():
    d = os.path.join(ROOT, "bad_torch")
    os.makedirs(d, exist_ok=True)
    torch.manual_seed(18)
    torch.save(FullNet(), os.path.join(d, "full_model.pt"))
    torch.save(torch.nn.LSTM(3, 2), os.path.join(d, "lstm_module.pt"))


if __name__ == "__main__":
    frameworks()
    sequences()
    bad()
    print("torch", torch.__version__, "numpy", np.__version__)
