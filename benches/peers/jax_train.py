"""The training step that `benches/train.rs` times, written in JAX: same task, block, shapes,
initialisation, loss, clipping, AdamW and dtype (f32), jit-compiled. A peer for measuring icl's
training speed on the same machine (benches/peers/run.sh prints both side by side).

What one step does, as in `icl::train::train_step`:
  sample a batch of prompts on the host (x, w ~ N(0, I), y = wᵀx), encode the 2n+1 columns
  x̃_k = [0, x_k], ỹ_k = [y_k, 0…]; forward; MSE over every x̃ column; backward; clip the global
  gradient norm to `clip`; AdamW with the scheduled learning rate (linear warm-up, then cosine).
The block (docs/FORMATS.md, "The forward pass"): h = E·token + b + pos[t]; per layer
  gpt2:  h += Attn(LN(h)); h += MLP(LN(h));  final LN        paper: h += Attn(h); h += MLP(LN(h))
with causal softmax attention (Q, K, V, O with biases, q·k/√head_dim) and an exact-erf GeLU MLP.

Usage: python3 benches/peers/jax_train.py --config tiny|paper_small [--steps 50] [--warmup 5]
Prints one JSON line: {"config", "ms_per_step", "steps", "jax", "devices"}.
"""

import argparse
import json
import math
import time

import numpy as np

CONFIGS = {
    # configs/tiny.toml
    "tiny": dict(d=4, n=16, arch="gpt2", layers=4, width=32, heads=2, mlp=64, batch=16,
                 lr=2e-3, wd=0.0, b1=0.9, b2=0.999, eps=1e-8, warmup=0.2, clip=1.0, steps=15000),
    # configs/paper.toml with model.layers=4, model.width=128, model.mlp_hidden=512
    "paper_small": dict(d=8, n=40, arch="paper", layers=4, width=128, heads=4, mlp=512, batch=64,
                        lr=1e-4, wd=0.0, b1=0.9, b2=0.98, eps=1e-9, warmup=0.2, clip=1.0,
                        steps=500000),
}


def init_params(c, key):
    import jax
    import jax.numpy as jnp

    def linear(key, fan_out, fan_in):
        bound = 1.0 / math.sqrt(fan_in)
        w = jax.random.uniform(key, (fan_out, fan_in), jnp.float32, -bound, bound)
        return {"w": w, "b": jnp.zeros((fan_out,), jnp.float32)}

    def norm():
        return {"w": jnp.ones((c["width"],), jnp.float32), "b": jnp.zeros((c["width"],), jnp.float32)}

    W, T = c["width"], 2 * c["n"] + 1
    keys = iter(jax.random.split(key, 4 + 6 * c["layers"]))
    p = {
        "embed": linear(next(keys), W, c["d"] + 1),
        "pos": 0.02 * jax.random.normal(next(keys), (T, W), jnp.float32),
        "readout": linear(next(keys), 1, W),
        "layers": [],
    }
    for _ in range(c["layers"]):
        layer = {
            "q": linear(next(keys), W, W), "k": linear(next(keys), W, W),
            "v": linear(next(keys), W, W), "o": linear(next(keys), W, W),
            "norm": norm(),
            "up": linear(next(keys), c["mlp"], W), "down": linear(next(keys), W, c["mlp"]),
        }
        if c["arch"] == "gpt2":
            layer["attn_norm"] = norm()
        p["layers"].append(layer)
    if c["arch"] == "gpt2":
        p["final_norm"] = norm()
    return p


def make_step(c):
    import jax
    import jax.numpy as jnp

    H, W = c["heads"], c["width"]
    hd = W // H

    def lin(p, x):
        return x @ p["w"].T + p["b"]

    def ln(p, x):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / jnp.sqrt(var + 1e-5) * p["w"] + p["b"]

    def attn(p, a):
        B, T, _ = a.shape
        split = lambda t: t.reshape(B, T, H, hd).transpose(0, 2, 1, 3)
        q, k, v = split(lin(p["q"], a)), split(lin(p["k"], a)), split(lin(p["v"], a))
        s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd)
        mask = jnp.tril(jnp.ones((T, T), bool))
        s = jnp.where(mask, s, -jnp.inf)
        o = jax.nn.softmax(s, axis=-1) @ v
        return lin(p["o"], o.transpose(0, 2, 1, 3).reshape(B, T, W))

    def forward(p, tokens):
        T = tokens.shape[1]
        h = lin(p["embed"], tokens) + p["pos"][:T]
        for layer in p["layers"]:
            a = ln(layer["attn_norm"], h) if "attn_norm" in layer else h
            h = h + attn(layer, a)
            m = ln(layer["norm"], h)
            h = h + lin(layer["down"], jax.nn.gelu(lin(layer["up"], m), approximate=False))
        if "final_norm" in p:
            h = ln(p["final_norm"], h)
        return lin(p["readout"], h)[..., 0]

    def loss_fn(p, tokens, ys):
        pred = forward(p, tokens)[:, 0::2]
        return jnp.mean((pred - ys) ** 2)

    @jax.jit
    def step(p, m, v, t, lr, tokens, ys):
        loss, g = jax.value_and_grad(loss_fn)(p, tokens, ys)
        leaves = jax.tree_util.tree_leaves(g)
        norm = jnp.sqrt(sum(jnp.sum(x * x) for x in leaves))
        scale = jnp.minimum(1.0, c["clip"] / jnp.maximum(norm, 1e-30))
        g = jax.tree_util.tree_map(lambda x: x * scale, g)
        m = jax.tree_util.tree_map(lambda m, g: c["b1"] * m + (1 - c["b1"]) * g, m, g)
        v = jax.tree_util.tree_map(lambda v, g: c["b2"] * v + (1 - c["b2"]) * g * g, v, g)
        bc1, bc2 = 1 - c["b1"] ** t, 1 - c["b2"] ** t
        p = jax.tree_util.tree_map(
            lambda p, m, v: p * (1 - lr * c["wd"]) - lr * (m / bc1) / (jnp.sqrt(v / bc2) + c["eps"]),
            p, m, v)
        return p, m, v, loss

    return step


def learning_rate(c, step):
    warm = int(c["warmup"] * c["steps"])
    if step < warm:
        return c["lr"] * (step + 1) / warm
    frac = (step - warm) / max(1, c["steps"] - warm)
    return c["lr"] * 0.5 * (1 + math.cos(math.pi * frac))


def batch(c, rng):
    B, n, d = c["batch"], c["n"], c["d"]
    w = rng.standard_normal((B, d))
    x = rng.standard_normal((B, n + 1, d))
    y = np.einsum("bnd,bd->bn", x, w)
    tokens = np.zeros((B, 2 * n + 1, d + 1), np.float32)
    tokens[:, 0::2, 1:] = x
    tokens[:, 1::2, 0] = y[:, :n]
    return tokens, y.astype(np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", choices=sorted(CONFIGS), required=True)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    a = ap.parse_args()
    import jax
    import jax.numpy as jnp

    c = CONFIGS[a.config]
    p = init_params(c, jax.random.PRNGKey(0))
    zeros = lambda t: jax.tree_util.tree_map(jnp.zeros_like, t)
    m, v = zeros(p), zeros(p)
    step = make_step(c)
    rng = np.random.default_rng(0)

    def run(i):
        nonlocal p, m, v
        tokens, ys = batch(c, rng)
        p, m, v, loss = step(p, m, v, float(i + 1), learning_rate(c, i), tokens, ys)
        return loss

    for i in range(a.warmup):
        run(i).block_until_ready()
    t0 = time.perf_counter()
    for i in range(a.warmup, a.warmup + a.steps):
        loss = run(i)
    loss.block_until_ready()
    ms = (time.perf_counter() - t0) / a.steps * 1e3
    if not math.isfinite(float(loss)):
        raise SystemExit(f"non-finite loss {float(loss)}")
    print(json.dumps({"config": a.config, "ms_per_step": ms, "steps": a.steps, "last_loss": float(loss),
                      "jax": jax.__version__, "devices": [str(d) for d in jax.devices()]}))


if __name__ == "__main__":
    main()
