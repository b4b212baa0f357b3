"""Does a verification give its first token the bits an AR step gives it? Per kernel call of the fast path.

    python3 benchmarks/batch_invariance.py                                   # H200: random Llama-3.1-8B, bf16, ~1 min
    python3 benchmarks/batch_invariance.py --out $OUT/invariance.txt --tokens 5,16
    TRITON_INTERPRET=1 python3 benchmarks/batch_invariance.py --smoke        # CPU: random:tiny, fp32, seconds

Greedy speculative decoding commits the tokens an AR decode would only if the target's verification of a block of
``n`` tokens computes, for the block's first token, what a one-token AR step over the same prefix computes. In
exact arithmetic it does; in bf16 it does bit for bit only where every kernel sums a row the same way whatever the
other rows (batch invariance). The bf16 audit (``gpu_bf16_audit.py``) counts sequences whose speculative output
leaves the engine's AR; this script finds which kernel makes a batch-1 verification leave it.

On a fresh slot cache it prefills ``--prompt`` random tokens (one row), then runs the fast path's forward twice over
that prefix: an AR step (the next token alone at the next slot) and a verification of ``n`` tokens starting with
the same token (causal order among them, the chain's mask). Every call of the fast path's kernels (the projections
through ``projection.tuned_linear``, ``kernels.rope_write``, ``kernels.attention``, the residual add + RMSNorm: on a
GPU ``projection.add_rms_norm``) is recorded for the first token's row, in call order; the
two runs' records are compared call by call. Printed:
per ``n``, whether the first token's logits are bit-equal, and the first call (layer, kernel) whose output differs,
with its largest absolute difference, followed by the next few. Where every call is equal and the logits too, the
forward is batch-invariant between 1 and ``n`` tokens at batch 1.

Runs with the kernels on a GPU; ``--smoke`` on CPU through Triton's interpreter (``TRITON_INTERPRET=1`` before
Python starts, ``tests/test_batch_invariance.py``). There a ``tl.dot`` is numpy's float32 matmul (OpenBLAS), whose
sum for a row depends on the row's place in the tile (on one x86 machine rows 6-15 of a 16-row tile took another
micro-kernel than rows 0-5), so the first token's rows, at ``g * n`` in the folded layout, match the AR step's up to
a few tokens only (``random:tiny``, 2 query heads per KV head: up to 5): an artefact of the interpreter, not of the
kernels; the GPU's run is the one that counts.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

import torch

from sdlaws.measure import fastpath, kernels, projection
from sdlaws.measure.kvcache import SlotCache, block_mask
from sdlaws.measure.models import load_model


class Recorder:
    """Wraps the fast path's kernel entry points; each call's output for the first token's row, in call order.
    ``attention_tile``: attention's query rows per program forced to this many (one row tile up to it), the same for
    the AR step and the verification, to test whether the tile is what moves the bits."""

    def __init__(self, fast, n: int, attention_tile: int | None = None):
        self.fast, self.n, self.calls, self.tile = fast, n, [], attention_tile

    def _keep(self, name: str, out: torch.Tensor, first_row) -> None:
        self.calls.append((name, first_row(out).detach().float().cpu().clone()))

    @contextlib.contextmanager
    def active(self):
        saved = dict(linear=projection.tuned_linear, rope=kernels.rope_write, attention=kernels.attention,
                     norm=self.fast.kernels.add_rms_norm)
        n = self.n

        def linear(x, weight, bias=None, swiglu=False, fallback=None):
            out = saved["linear"](x, weight, bias, swiglu, fallback)
            rows = out.reshape(-1, out.shape[-1])
            self._keep(f"linear {tuple(weight.shape)}{' swiglu' if swiglu else ''}", rows,
                       lambda t: t[0])  # rows are batch x tokens: row 0 is the first token's
            return out

        def rope(qkv, cos, sin, slots, keys, values, heads):
            out = saved["rope"](qkv, cos, sin, slots, keys, values, heads)
            self._keep("rope_write q", out, lambda t: t[:, :, ::n])  # folded rows g * n + 0
            return out

        def attention(q, keys, values, mask, tokens, **kw):
            if self.tile:
                kw = {**kw, "block_m": self.tile}  # its tiles, warps and shares as the engine would set them
            out = saved["attention"](q, keys, values, mask, tokens, **kw)
            self._keep("attention", out, lambda t: t[:, 0])
            return out

        def norm(x, delta, weight, eps):
            new_x, h = saved["norm"](x, delta, weight, eps)
            self._keep("add_rms_norm x", new_x, lambda t: t[:, 0])
            self._keep("add_rms_norm h", h, lambda t: t[:, 0])
            return new_x, h

        projection.tuned_linear, kernels.rope_write, kernels.attention = linear, rope, attention
        self.fast.kernels.add_rms_norm = norm
        try:
            yield self
        finally:
            projection.tuned_linear, kernels.rope_write, kernels.attention = (saved["linear"], saved["rope"],
                                                                            saved["attention"])
            self.fast.kernels.add_rms_norm = saved["norm"]


def forward(fast, cache: SlotCache, ids: torch.Tensor, start: int, prompt: int) -> torch.Tensor:
    """Logits ``(n, vocab)`` of one row's tokens ``ids`` ``(1, n)`` at slots and positions ``start...``, attending
    the prefix ``[0, prompt)`` and, causally, each other."""
    n, device = ids.shape[1], ids.device
    cache.write_slots = torch.arange(start, start + n, device=device)[None]
    zero = torch.zeros(1, dtype=torch.long, device=device)
    mask = block_mask(zero, zero + prompt, zero + start, torch.ones(n, n, dtype=torch.bool).tril().to(device),
                      cache.num_slots, fast.dtype)
    positions = torch.arange(start, start + n, device=device)[None]
    return fast(input_ids=ids, position_ids=positions, attention_mask=mask, past_key_values=cache).logits[0]


def compare(model, prompt: int, n: int, seed: int, attention_tile: int | None = None) -> dict:
    """The AR step's and the ``n``-token verification's records and first-token logits, compared (attention's
    query tile forced to ``attention_tile`` rows in both, if given)."""
    fast = fastpath.wrap(model, invariant=True)  # as the engine runs its target
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (1, prompt + n), generator=gen).to(device)
    cache = SlotCache(model.config.num_hidden_layers, prompt + 64)
    forward(fast, cache, ids[:, :prompt], 0, prompt)
    runs = []
    for tokens in (1, n):
        recorder = Recorder(fast, tokens, attention_tile)
        with recorder.active():
            logits = forward(fast, cache, ids[:, prompt:prompt + tokens], prompt, prompt)[0]
        runs.append((recorder.calls, logits.float().cpu()))
    (ar_calls, ar_logits), (v_calls, v_logits) = runs
    if [name for name, _ in ar_calls] != [name for name, _ in v_calls]:
        raise RuntimeError(f"n={n}: the two forwards called different kernels (a path that depends on the tokens)")
    # a call's layer: each layer rotates once (rope_write), right after its qkv projection; the norms after its
    # down projection (the next layer's input, or the final norm) and the LM head count with it
    names = [name for name, _ in ar_calls]
    starts = [r - 1 for r, name in enumerate(names) if name.startswith("rope_write")]
    layers = [max(0, sum(start <= i for start in starts) - 1) for i in range(len(names))]
    diffs = [(layers[i], name, (a - b).abs().max().item())
             for i, ((name, a), (_, b)) in enumerate(zip(ar_calls, v_calls)) if not torch.equal(a, b)]
    return dict(n=n, tile=attention_tile, calls=len(ar_calls), logits_equal=torch.equal(ar_logits, v_logits),
                logits_max_diff=(ar_logits - v_logits).abs().max().item(),
                argmax_equal=ar_logits.argmax().item() == v_logits.argmax().item(), diffs=diffs)


def report(result: dict, shown: int = 6) -> str:
    tile = f", attention tile {result['tile']}" if result.get("tile") else ""
    head = (f"n={result['n']}{tile}: first-token logits {'bit-equal' if result['logits_equal'] else 'differ'} "
            f"(max |diff| {result['logits_max_diff']:.3g}, argmax {'same' if result['argmax_equal'] else 'differs'}); "
            f"{len(result['diffs'])} of {result['calls']} kernel calls differ")
    lines = [head] + [f"  layer {layer}, {name}: max |diff| {diff:.3g}" for layer, name, diff in result["diffs"][:shown]]
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="random:llama-3.1-8b")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--prompt", type=int, default=128, help="prefix tokens")
    p.add_argument("--tokens", default="5", help="verification lengths to compare with an AR step, e.g. 5,16")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--attention-tile", type=int, action="append", default=[],
                   help="also compare with attention's query rows per program forced to this many (16, 32 or 64; "
                        "repeatable): does a fixed tile make the verification's first row the AR step's?")
    p.add_argument("--smoke", action="store_true", help="CPU, fp32, random:tiny, kernels in Triton's interpreter")
    p.add_argument("--out", help="also write the report to this file")
    args = p.parse_args(argv)
    try:
        args.tokens = [int(t) for t in args.tokens.split(",")]
    except ValueError:
        p.error(f"--tokens {args.tokens!r}: comma-separated integers >= 2, e.g. 5,16")
    if min(args.tokens) < 2 or args.prompt < 1:
        p.error("--tokens: each at least 2 (a verification); --prompt at least 1")
    if any(t not in (16, 32, 64) for t in args.attention_tile):
        p.error(f"--attention-tile {args.attention_tile}: each 16, 32 or 64 (the kernel's row tiles)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.smoke:
        if not os.environ.get("TRITON_INTERPRET"):
            print("--smoke runs the kernels in Triton's interpreter: set TRITON_INTERPRET=1 before Python starts",
                  file=sys.stderr)
            return 2
        model, _, _ = load_model("random:tiny", dtype="float32", device="cpu")
    elif not torch.cuda.is_available():
        print("no GPU: run on a GPU machine, or with --smoke on CPU", file=sys.stderr)
        return 2
    else:
        model, _, _ = load_model(args.model, dtype=args.dtype, device="cuda")
    fastpath.wrap(model).triton = True  # on CPU the interpreter's kernels (the GPU's are on by default)
    with torch.no_grad():
        text = "\n".join(report(compare(model, args.prompt, n, args.seed, tile))
                          for tile in [None, *args.attention_tile] for n in args.tokens)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
