#!/usr/bin/env python3
"""Trains the small character-level language model that `lstm generate`
ships with, on tools/data/genesis.txt (the Book of Genesis, King James
Version: public domain; extracted from Debian's bible-kjv-text package).

    pip install torch safetensors numpy
    python3 tools/train_charlm.py

Writes models/charlm-genesis.safetensors (embedding.weight, lstm.* as
nn.LSTM names them, fc.weight, fc.bias, and `vocab`: the characters'
code points as float32) and tests/golden/charlm/greedy.json: PyTorch's
greedy continuation of a prompt, which the Rust test must reproduce
character for character. CI does not run this script.
"""

import json
import os
import time

import numpy as np
import torch
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TEXT = open(os.path.join(ROOT, "tools", "data", "genesis.txt"), encoding="utf-8").read()
VOCAB = sorted(set(TEXT))
IDX = {c: i for i, c in enumerate(VOCAB)}
E, H, LAYERS, SEQ, BATCH, STEPS = 32, 192, 2, 128, 64, int(os.environ.get("STEPS", "1500"))


class CharLM(torch.nn.Module):
    def __init__(self, v):
        super().__init__()
        self.embedding = torch.nn.Embedding(v, E)
        self.lstm = torch.nn.LSTM(E, H, num_layers=LAYERS)
        self.fc = torch.nn.Linear(H, v)

    def forward(self, x, state=None):  # x: [T, B] indices
        y, state = self.lstm(self.embedding(x), state)
        return self.fc(y), state


def main():
    torch.manual_seed(0)
    np.random.seed(0)
    torch.set_num_threads(2)
    data = torch.tensor([IDX[c] for c in TEXT], dtype=torch.long)
    model = CharLM(len(VOCAB))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, STEPS)
    t0 = time.time()
    for step in range(STEPS):
        starts = np.random.randint(0, len(data) - SEQ - 1, BATCH)
        x = torch.stack([data[s : s + SEQ] for s in starts], 1)
        y = torch.stack([data[s + 1 : s + SEQ + 1] for s in starts], 1)
        logits, _ = model(x)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, len(VOCAB)), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == STEPS - 1:
            print(f"step {step} loss {loss.item():.3f} ({time.time() - t0:.0f} s)", flush=True)
    model.eval()
    tensors = {k: v.detach().contiguous().float() for k, v in model.state_dict().items()}
    tensors["vocab"] = torch.tensor([float(ord(c)) for c in VOCAB])
    os.makedirs(os.path.join(ROOT, "models"), exist_ok=True)
    save_file(tensors, os.path.join(ROOT, "models", "charlm-genesis.safetensors"))

    # PyTorch's greedy continuation, one character at a time.
    cases = []
    for prompt, length in [("In the beginning", 160), ("And Jacob said", 120)]:
        with torch.no_grad():
            x = torch.tensor([[IDX[c]] for c in prompt])
            logits, state = model(x)
            out = []
            for _ in range(length):
                nxt = int(torch.argmax(logits[-1, 0]))
                out.append(VOCAB[nxt])
                logits, state = model(torch.tensor([[nxt]]), state)
        cases.append({"prompt": prompt, "length": length, "greedy": "".join(out)})
        print(repr(prompt + "".join(out)))
    os.makedirs(os.path.join(ROOT, "tests", "golden", "charlm"), exist_ok=True)
    with open(os.path.join(ROOT, "tests", "golden", "charlm", "greedy.json"), "w") as f:
        json.dump({"torch": torch.__version__, "cases": cases}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
