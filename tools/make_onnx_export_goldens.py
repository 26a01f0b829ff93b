#!/usr/bin/env python3
"""ONNX models as the real exporters write them, for tests/sequences.rs
(and tests/cli.rs), under tests/golden/sequences/onnx_export_*:

    $HOME/peers/bin/python tools/make_onnx_export_goldens.py            # PyTorch cases
    ONLY=tf /path/to/tf-python tools/make_onnx_export_goldens.py        # tf2onnx cases

The PyTorch cases need torch, onnx, onnxruntime and onnxscript (written
with torch 2.15, onnx 1.23, onnxruntime 1.32, onnxscript 0.7); the tf2onnx
cases need tensorflow-cpu, tf2onnx and onnxruntime (written with
TensorFlow 2.21 / Keras 3.15, tf2onnx 1.17). CI does not run this script;
its outputs are committed. Expected outputs are onnxruntime's, running the
very file committed.

Cases (each directory as in tools/make_framework_goldens.py's sequence
cases: weights.onnx [+ weights.onnx.data], x.npy, state_in.npz,
expected_y.npy, expected_state.npz when the graph outputs the final
states, meta.json with the layout the graph encodes):

* onnx_export_torch_2layer_op14: nn.LSTM(num_layers=2), legacy exporter
  (dynamo=False), opset 14, dynamic axes, initial states as graph inputs.
* onnx_export_torch_2layer_bf_op17_ext: nn.LSTM(num_layers=2,
  batch_first=True), legacy exporter, opset 17, dynamic axes, then saved
  with onnx.save(..., save_as_external_data=True) (offsets and lengths in
  one weights.onnx.data).
* onnx_export_torch_bidir2_op17: nn.LSTM(num_layers=2, bidirectional=True),
  legacy exporter, opset 17.
* onnx_export_torch_dynamo_bf: 1-layer batch_first nn.LSTM through today's
  default exporter (dynamo=True) with external data and optimize=False,
  so that W, R and B are computed by Slice/Concat/Unsqueeze subgraphs
  over the state-dict initializers (the form the issue met), and the
  initial states by Expand over Shape.
* onnx_export_torch_dynamo_bidir: 1-layer bidirectional through the
  default exporter as is (optimize=True, external data).
* onnx_export_torch_dynamo_1layer: a 1-layer nn.LSTM through the default
  exporter exactly as a new user calls it (the issue's row).
* onnx_export_torch_legacy_1layer_bf_square: a 1-layer batch_first
  nn.LSTM, legacy exporter, with B = T, so that running it in the wrong
  layout would fit the shapes (the issue's silently wrong row).
* onnx_export_tf2onnx_stack / onnx_export_tf2onnx_bidir /
  onnx_export_tf2onnx_bidir_then_lstm: Keras LSTM stack,
  Bidirectional(LSTM), and Bidirectional(LSTM) followed by an LSTM,
  through tf2onnx.convert.from_keras, opset 17.
"""
import json
import os
import shutil
import tempfile
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.filterwarnings("ignore")

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden", "sequences")


def save_case(name, model_path, x, batch_first, exporter, feeds_extra=None, state_in=None):
    """Runs `model_path` with onnxruntime on x (and the extra feeds), then
    writes the case. `state_in` = (c, m) given to the graph, else zeros."""
    import onnx
    import onnxruntime as ort

    d = os.path.join(ROOT, name)
    if os.path.exists(d):
        shutil.rmtree(d)
    os.makedirs(d)
    m = onnx.load(model_path, load_external_data=False)
    ext = os.path.join(os.path.dirname(model_path), "weights.onnx.data")
    shutil.copy(model_path, os.path.join(d, "weights.onnx"))
    if os.path.exists(ext):
        shutil.copy(ext, os.path.join(d, "weights.onnx.data"))
    sess = ort.InferenceSession(os.path.join(d, "weights.onnx"), providers=["CPUExecutionProvider"])
    inputs = [i.name for i in sess.get_inputs()]
    feeds = {inputs[0]: x}
    feeds.update(feeds_extra or {})
    outs = sess.run(None, feeds)
    y = outs[0]
    np.save(os.path.join(d, "x.npy"), x.astype(np.float32))
    np.save(os.path.join(d, "expected_y.npy"), y.astype(np.float32))
    # Final states, when the graph outputs them: [L*D, B, H].
    if len(outs) == 3:
        np.savez(os.path.join(d, "expected_state.npz"), c=outs[2].astype(np.float32), m=outs[1].astype(np.float32))
        ld, b, h = outs[1].shape
    if state_in is None:
        if len(outs) == 3:
            c0 = np.zeros((ld, b, h), np.float32)
        else:
            c0 = None
        state_in = (c0, c0)
    if state_in[0] is not None:
        np.savez(os.path.join(d, "state_in.npz"), c=state_in[0], m=state_in[1])
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump({"format": "onnx", "prefix": "", "batch_first": batch_first, "exporter": exporter,
                   "producer": m.producer_name + " " + m.producer_version}, f, indent=1, sort_keys=True)
        f.write("\n")
    print(name, "y", y.shape, "outputs", len(outs))


def torch_cases():
    import torch

    torch.manual_seed(16)

    class Net(torch.nn.Module):
        def __init__(self, **kw):
            super().__init__()
            self.lstm = torch.nn.LSTM(**kw)

        def forward(self, x, h0=None, c0=None):
            if h0 is None:
                y, (h, c) = self.lstm(x)
            else:
                y, (h, c) = self.lstm(x, (h0, c0))
            return y, h, c

    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "weights.onnx")

    # Legacy exporter, opset 14, states as inputs.
    net = Net(input_size=4, hidden_size=6, num_layers=2).eval()
    t, b = 5, 3
    x = torch.rand(t, b, 4) * 4 - 2
    h0, c0 = torch.rand(2, b, 6) * 2 - 1, torch.rand(2, b, 6) * 2 - 1
    torch.onnx.export(net, (x, h0, c0), path, dynamo=False, opset_version=14,
                      input_names=["x", "h0", "c0"], output_names=["y", "hn", "cn"],
                      dynamic_axes={"x": {0: "T", 1: "B"}, "h0": {1: "B"}, "c0": {1: "B"},
                                    "y": {0: "T", 1: "B"}, "hn": {1: "B"}, "cn": {1: "B"}})
    save_case("onnx_export_torch_2layer_op14", path, x.numpy(), False, "torch.onnx.export(dynamo=False, opset_version=14)",
              {"h0": h0.numpy(), "c0": c0.numpy()}, (c0.numpy(), h0.numpy()))

    # Legacy exporter, batch_first, opset 17, re-saved with external data.
    net = Net(input_size=3, hidden_size=5, num_layers=2, batch_first=True).eval()
    b, t = 3, 6
    x = torch.rand(b, t, 3) * 4 - 2
    torch.onnx.export(net, (x,), path, dynamo=False, opset_version=17, input_names=["x"],
                      output_names=["y", "hn", "cn"],
                      dynamic_axes={"x": {0: "B", 1: "T"}, "y": {0: "B", 1: "T"}, "hn": {1: "B"}, "cn": {1: "B"}})
    import onnx
    m = onnx.load(path)
    os.remove(path)
    onnx.save(m, path, save_as_external_data=True, all_tensors_to_one_file=True, location="weights.onnx.data", size_threshold=0)
    save_case("onnx_export_torch_2layer_bf_op17_ext", path, x.numpy(), True,
              "torch.onnx.export(dynamo=False, opset_version=17) + onnx.save(save_as_external_data=True)")
    os.remove(os.path.join(tmp, "weights.onnx.data"))

    # Legacy exporter, bidirectional 2-layer, opset 17.
    net = Net(input_size=3, hidden_size=4, num_layers=2, bidirectional=True).eval()
    t, b = 4, 2
    x = torch.rand(t, b, 3) * 4 - 2
    torch.onnx.export(net, (x,), path, dynamo=False, opset_version=17, input_names=["x"],
                      output_names=["y", "hn", "cn"],
                      dynamic_axes={"x": {0: "T", 1: "B"}, "y": {0: "T", 1: "B"}, "hn": {1: "B"}, "cn": {1: "B"}})
    save_case("onnx_export_torch_bidir2_op17", path, x.numpy(), False, "torch.onnx.export(dynamo=False, opset_version=17)")

    # Today's default exporter (dynamo), batch_first, external data, not
    # optimized: weights computed by Slice/Concat subgraphs.
    net = Net(input_size=5, hidden_size=16, batch_first=True).eval()
    b, t = 3, 6
    x = torch.rand(b, t, 5) * 4 - 2
    torch.onnx.export(net, (x,), path, dynamo=True, external_data=True, optimize=False, input_names=["x"],
                      output_names=["y", "hn", "cn"],
                      dynamic_shapes=({0: torch.export.Dim("B"), 1: torch.export.Dim("T")},))
    os.rename(path + ".data", os.path.join(tmp, "weights.onnx.data")) if os.path.exists(path + ".data") else None
    fix_location(path, "weights.onnx.data")
    save_case("onnx_export_torch_dynamo_bf", path, x.numpy(), True, "torch.onnx.export(dynamo=True, external_data=True, optimize=False)")
    if os.path.exists(os.path.join(tmp, "weights.onnx.data")):
        os.remove(os.path.join(tmp, "weights.onnx.data"))

    # Today's default exporter as a new user calls it, 1 layer.
    net = Net(input_size=4, hidden_size=7).eval()
    t, b = 6, 2
    x = torch.rand(t, b, 4) * 4 - 2
    torch.onnx.export(net, (x,), path, dynamo=True, external_data=True, input_names=["x"],
                      output_names=["y", "hn", "cn"],
                      dynamic_shapes=({0: torch.export.Dim("T"), 1: torch.export.Dim("B")},))
    if os.path.exists(path + ".data"):
        os.rename(path + ".data", os.path.join(tmp, "weights.onnx.data"))
    if os.path.exists(os.path.join(tmp, "weights.onnx.data")):
        fix_location(path, "weights.onnx.data")
    save_case("onnx_export_torch_dynamo_1layer", path, x.numpy(), False, "torch.onnx.export(dynamo=True, external_data=True)")
    if os.path.exists(os.path.join(tmp, "weights.onnx.data")):
        os.remove(os.path.join(tmp, "weights.onnx.data"))

    # Legacy exporter, 1 layer, batch_first, B = T (a wrong layout fits).
    net = Net(input_size=3, hidden_size=5, batch_first=True).eval()
    b = t = 4
    x = torch.rand(b, t, 3) * 4 - 2
    torch.onnx.export(net, (x,), path, dynamo=False, opset_version=17, input_names=["x"],
                      output_names=["y", "hn", "cn"],
                      dynamic_axes={"x": {0: "B", 1: "T"}, "y": {0: "B", 1: "T"}, "hn": {1: "B"}, "cn": {1: "B"}})
    save_case("onnx_export_torch_legacy_1layer_bf_square", path, x.numpy(), True, "torch.onnx.export(dynamo=False, opset_version=17)")

    # Today's default exporter as is, bidirectional.
    net = Net(input_size=3, hidden_size=6, bidirectional=True).eval()
    t, b = 5, 2
    x = torch.rand(t, b, 3) * 4 - 2
    torch.onnx.export(net, (x,), path, dynamo=True, external_data=True, input_names=["x"],
                      output_names=["y", "hn", "cn"],
                      dynamic_shapes=({0: torch.export.Dim("T"), 1: torch.export.Dim("B")},))
    if os.path.exists(path + ".data"):
        os.rename(path + ".data", os.path.join(tmp, "weights.onnx.data"))
    fix_location(path, "weights.onnx.data")
    save_case("onnx_export_torch_dynamo_bidir", path, x.numpy(), False, "torch.onnx.export(dynamo=True, external_data=True)")


def fix_location(path, location):
    """The exporter names its data file after the model (weights.onnx.data
    here already); make sure every external tensor points at `location`."""
    import onnx

    m = onnx.load(path, load_external_data=False)
    n = 0
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
                n += 1
    onnx.save(m, path)
    print(" external tensors:", n)


def tf_cases():
    import tensorflow as tf
    import tf2onnx

    rng = np.random.RandomState(16)
    tmp = tempfile.mkdtemp()
    path = os.path.join(tmp, "weights.onnx")

    def randomize(model):
        for layer in model.layers:
            ws = layer.get_weights()
            if ws:
                layer.set_weights([((rng.rand(*w.shape) - 0.5) * 1.2).astype(np.float32) for w in ws])

    for name, build in [
        ("onnx_export_tf2onnx_stack", lambda i: tf.keras.layers.LSTM(5, return_sequences=True)(tf.keras.layers.LSTM(4, return_sequences=True)(i))),
        ("onnx_export_tf2onnx_bidir", lambda i: tf.keras.layers.Bidirectional(tf.keras.layers.LSTM(4, return_sequences=True))(i)),
        ("onnx_export_tf2onnx_bidir_then_lstm", lambda i: tf.keras.layers.LSTM(3, return_sequences=True)(
            tf.keras.layers.Bidirectional(tf.keras.layers.LSTM(4, return_sequences=True))(i))),
    ]:
        inp = tf.keras.Input((None, 3))
        model = tf.keras.Model(inp, build(inp))
        randomize(model)
        spec = (tf.TensorSpec((None, None, 3), tf.float32, name="x"),)
        tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=path)
        b, t = 3, 5
        x = (rng.rand(b, t, 3) * 4 - 2).astype(np.float32)
        keras_y = np.asarray(model(x))
        save_case(name, path, x, True, f"tf2onnx {tf2onnx.__version__} from_keras (TensorFlow {tf.__version__})")
        got = np.load(os.path.join(ROOT, name, "expected_y.npy"))
        print(" onnxruntime vs Keras:", np.abs(got - keras_y).max())


if __name__ == "__main__":
    if os.environ.get("ONLY") == "tf":
        tf_cases()
    else:
        torch_cases()
