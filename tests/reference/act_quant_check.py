#!/usr/bin/env python3
"""How far int8 activation quantization alone moves a logits fixture's reference.

The engine (like llama.cpp) quantizes every matmul input per token in blocks of 32 to int8 with
scale amax/127 (kernels/matmul.cpp); HF computes in fp32. This script reruns a real-model fixture's
prompts in HF twice, plain fp32 and with that quantization applied to the input of every
nn.Linear, and prints, per prompt, the largest |difference| over the fixture's stored ids (top-16
and probes) divided by max(1, max |logit|) -- the measure tests/logits_reference_test.cpp prints --
at position 0 and over the other positions, plus the largest |hidden state| at positions 0 and 1.

  /tmp/refenv/bin/python tests/reference/act_quant_check.py qwen25_15b_instruct_q4km

Used to justify the position-0 tolerance of the Qwen2.5-Coder-1.5B fixture: the first token carries
a massive activation (|h| in the thousands), and quantizing it with its 32-wide block moves the
position-0 logits by as much as the engine's do.
"""
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)
import make_logits_fixtures as mk  # noqa: E402

BLOCK = 32


def quantize(x: torch.Tensor) -> torch.Tensor:
    shape = x.shape
    xb = x.reshape(-1, shape[-1] // BLOCK, BLOCK)
    d = xb.abs().amax(-1, keepdim=True).clamp_min(1e-30) / 127
    return (torch.round(xb / d).clamp(-127, 127) * d).reshape(shape)


def rel_diffs(fx, prompt, logits):
    out = []
    for rec in prompt["per_position"]:
        scale = max(1.0, rec["max_abs_logit"])
        pairs = list(zip(rec["top_ids"], rec["top_logits"])) + list(zip(fx["probe_ids"], rec["probe_logits"]))
        out.append(max(abs(float(logits[rec["pos"], i]) - v) for i, v in pairs) / scale)
    return out


def main():
    name = sys.argv[1] if len(sys.argv) > 1 else "qwen25_15b_instruct_q4km"
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    fx = json.load(open(os.path.join(REPO, "tests", "fixtures", "logits", name + ".json")))
    if fx["model"]["kind"] != "real":
        raise SystemExit("a real-model fixture, please")
    m = mk.load_model(os.path.expanduser(fx["model"]["file"]), fx["reference"]["config_overrides"])
    plain = torch.nn.Linear.forward
    for p in fx["prompts"]:
        ids = torch.tensor([p["ids"]])
        with torch.no_grad():
            out = m(ids, use_cache=False, output_hidden_states=True)
            torch.nn.Linear.forward = lambda self, x: plain(self, quantize(x))
            try:
                q = m(ids, use_cache=False).logits[0]
            finally:
                torch.nn.Linear.forward = plain
        h0 = max(float(h[0, 0].abs().max()) for h in out.hidden_states)
        h1 = max(float(h[0, 1:].abs().max()) for h in out.hidden_states) if len(p["ids"]) > 1 else 0.0
        ref = rel_diffs(fx, p, out.logits[0])
        act = rel_diffs(fx, p, q)
        print(f"{name}/{p['name']}: max|h| pos 0 {h0:.0f}, other positions {h1:.0f}; "
              f"fp32 vs fixture {max(ref):.1e}; int8/32 activations vs fixture: pos 0 {act[0]:.2e}, "
              f"other positions {max(act[1:]) if len(act) > 1 else 0.0:.2e}", flush=True)


if __name__ == "__main__":
    main()
