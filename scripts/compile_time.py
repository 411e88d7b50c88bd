"""Compile time of the forward and backward, whole model against one compile per layer ("regional").

    python scripts/compile_time.py [--device cpu|cuda] [--model tiny|distilbert-base-random|DIR]
Each (variant, scope) runs in a fresh process with Inductor's caches off, so every row pays a cold
compile; prints seconds to the first finished backward and how many graphs Dynamo made. On a CPU the
model is a 6-layer BERT, 128 wide (Inductor compiles C++ there), at 32 tokens.
"""

import argparse
import json
import os
import subprocess
import sys
import time

CHILD = """
import json, sys, time, torch
from torch._dynamo.utils import counters
from transformers import BertConfig
import attnpaper
from attnpaper.model.auto import encoder_layers
from attnpaper.training.batches import Collator, chunk_for, forward
from attnpaper.training.step import autocast
variant, scope, device, model, length = sys.argv[1:6]
length = int(length)
torch.manual_seed(0)
tiny = BertConfig(hidden_size=128, num_hidden_layers=6, num_attention_heads=4, intermediate_size=256)
net = attnpaper.build_model(tiny if model == "tiny" else model, variant).to(device)
layout = attnpaper.variants.variant(variant).layout
collate = Collator(layout, max_length=length, batch_size=32, static=True, chunk=chunk_for(variant, layout, length))
lengths = [length - (7 * i) % (length // 2) for i in range(32)]
batch = {k: v.to(device) if torch.is_tensor(v) else v
         for k, v in collate([list(range(1, n + 1)) for n in lengths], [i % 2 for i in range(32)]).items()}
def loss(b):
    with autocast("bf16" if device == "cuda" else "fp32", torch.device(device)):
        return forward(net, b)[0]
t = time.perf_counter()
if scope == "whole":
    fn = torch.compile(loss, fullgraph=True, dynamic=False)
else:
    for layer in encoder_layers(net):
        layer.compile(fullgraph=True, dynamic=False)
    fn = loss
fn(batch).backward()
if device == "cuda":
    torch.cuda.synchronize()
print(json.dumps({"variant": variant, "scope": scope, "compile_s": round(time.perf_counter() - t, 2),
                  "graphs": counters["stats"]["unique_graphs"]}))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--length", type=int, default=32)
    ap.add_argument("--variants", nargs="+", default=["sdpa", "flash", "linear", "hybrid"])
    args = ap.parse_args()
    env = os.environ | {"TORCHINDUCTOR_FX_GRAPH_CACHE": "0", "TORCHINDUCTOR_AUTOGRAD_CACHE": "0"}
    for variant in args.variants:
        for scope in ("whole", "regional"):
            t = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-c", CHILD, variant, scope, args.device, args.model, str(args.length)],
                env=env,
                capture_output=True,
                text=True,
            )
            if out.returncode:
                print(json.dumps({"variant": variant, "scope": scope, "error": out.stderr.strip()[-300:]}))
                continue
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["process_s"] = round(time.perf_counter() - t, 1)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
