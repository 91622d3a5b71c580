#!/usr/bin/env python3
"""Reproduce an icl model's forward pass from its files alone (docs/FORMATS.md).

Needs only numpy and the `safetensors` package:

    python3 tests/python/forward.py MODEL_DIR PROMPTS.json OUT.json

PROMPTS.json is a list of prompts, each {"xs": [[...] * (n+1)], "ys": [...]} (the query's y is
ignored), or a list of token lists {"tokens": [[y, x_1..x_d], ...]}. OUT.json receives a list with,
per prompt, the prediction at every x̃ column (every even column: n+1 values).
"""
import json
import math
import sys

import numpy as np
from safetensors.numpy import load_file


def layer_norm(h, w, b, eps):
    """Over the last axis: (h - mean) / sqrt(var + eps) * w + b, var biased."""
    mean = h.mean(axis=-1, keepdims=True)
    c = h - mean
    var = (c * c).mean(axis=-1, keepdims=True)
    return c / np.sqrt(var + eps) * w + b


_erf = np.vectorize(math.erf)


def gelu(x, activation):
    if activation == "gelu":
        return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))
    if activation == "gelu_tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    raise ValueError(f"unknown activation {activation}")


def softmax_with_neg_inf(s):
    """Softmax over the last axis; -inf scores get weight 0; an all -inf row gets all zeros."""
    m = s.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(s - m)
    z = e.sum(axis=-1, keepdims=True)
    return e / np.where(z == 0.0, 1.0, z)


def attention(cfg, a_cfg, t, p, a):
    """a: [T, width] -> [T, width]."""
    T = a.shape[0]
    H, hd = a_cfg["heads"], a_cfg["head_dim"]
    ml = cfg["max_len"]
    lin = lambda name, x: x @ t[f"{p}.{name}.weight"].T + t[f"{p}.{name}.bias"]
    v = lin("v", a).reshape(T, H, hd).transpose(1, 0, 2)  # [H, T, hd]
    if a_cfg["qk"]:
        q = lin("q", a).reshape(T, H, hd).transpose(1, 0, 2)
        k = lin("k", a).reshape(T, H, hd).transpose(1, 0, 2)
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
    else:
        scores = np.zeros((H, T, T))
    null = np.zeros((H, T, 1))
    if a_cfg["bias"]:
        bias = t[f"{p}.bias"]  # [H, max_len, max_len+1]
        scores = scores + bias[:, :T, :T]
        null = null + bias[:, :T, ml : ml + 1]
    causal = np.triu(np.full((T, T), -np.inf), k=1)
    with np.errstate(invalid="ignore"):
        scores = scores + causal
    if a_cfg["zero_attn"]:
        scores = np.concatenate([scores, null], axis=-1)
    with np.errstate(invalid="ignore", over="ignore"):
        prob = softmax_with_neg_inf(scores)[:, :, :T]
    o = prob @ v  # [H, T, hd]
    mom = a_cfg.get("momentum")
    if mom is not None:
        if "eta" in mom:
            eta = np.full(H, float(mom["eta"]))
        else:
            eta = 1.0 / (1.0 + np.exp(-t[f"{p}.momentum_logit"]))
        lag = np.arange(T)[:, None] - np.arange(T)[None, :]  # t - s
        for h in range(H):
            m = np.where(lag > 0, eta[h] ** np.maximum(lag, 1), 0.0)
            o[h] = o[h] + m @ v[h]
    o = o.transpose(1, 0, 2).reshape(T, H * hd)
    return lin("o", o)


def mlp(m_cfg, t, p, m):
    lin = lambda name, x: x @ t[f"{p}.{name}.weight"].T + t[f"{p}.{name}.bias"]
    up = lin("up", m)
    if m_cfg["kind"] == "bilinear":
        inner = lin("gate", m) * up
    else:
        inner = gelu(up, m_cfg.get("activation", "gelu"))
    return lin("down", inner)


def forward(cfg, t, tokens):
    """tokens: [T, d+1] -> predictions [T]."""
    T = tokens.shape[0]
    h = tokens @ t["embed.weight"].T + t["embed.bias"] + t["pos.weight"][:T]
    for l, layer in enumerate(cfg["layers"]):
        p = f"layers.{l}"
        if layer.get("attn") is not None:
            a = h
            if layer.get("attn_norm") is not None:
                a = layer_norm(h, t[f"{p}.attn_norm.weight"], t[f"{p}.attn_norm.bias"], layer["attn_norm"]["eps"])
            h = h + attention(cfg, layer["attn"], t, f"{p}.attn", a)
        if layer.get("mlp") is not None:
            m = h
            if layer.get("norm") is not None:
                m = layer_norm(h, t[f"{p}.norm.weight"], t[f"{p}.norm.bias"], layer["norm"]["eps"])
            h = h + mlp(layer["mlp"], t, f"{p}.mlp", m)
    if cfg.get("final_norm") is not None:
        h = layer_norm(h, t["final_norm.weight"], t["final_norm.bias"], cfg["final_norm"]["eps"])
    return (h @ t["readout.weight"].T + t["readout.bias"])[:, 0]


def prompt_tokens(prompt, d):
    if "tokens" in prompt:
        return np.array(prompt["tokens"], dtype=np.float64)
    xs, ys = prompt["xs"], prompt["ys"]
    n = len(xs) - 1
    toks = np.zeros((2 * n + 1, d + 1))
    for k in range(n + 1):
        toks[2 * k, 1:] = xs[k]
        if k < n:
            toks[2 * k + 1, 0] = ys[k]
    return toks


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    model_dir, prompts_path, out_path = sys.argv[1:]
    with open(f"{model_dir}/config.json") as f:
        cfg = json.load(f)
    t = {k: v.astype(np.float64) for k, v in load_file(f"{model_dir}/model.safetensors").items()}
    with open(prompts_path) as f:
        prompts = json.load(f)
    out = []
    for pr in prompts:
        pred = forward(cfg, t, prompt_tokens(pr, cfg["d"]))
        out.append([float(v) for v in pred[0::2]])
    with open(out_path, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
