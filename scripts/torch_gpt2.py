"""GPT-2 in PyTorch, written for fp8lm's checks: the same architecture and parameter names as
fp8lm's model (Hugging Face GPT-2 names, Conv1D weights [in, out], LM head tied to wte).
Used as the oracle of the parity test and as the PyTorch side of `fp8lm bench step`."""
import json
import math
import struct

import torch
import torch.nn.functional as F

_DTYPES = {"F32": torch.float32, "F64": torch.float64, "I32": torch.int32, "I64": torch.int64}


def read_safetensors(path):
    """Returns ({name: tensor}, metadata) for F32/F64/I32/I64 tensors."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    out = {}
    for name, e in header.items():
        begin, end = e["data_offsets"]
        t = torch.frombuffer(bytearray(data[base + begin : base + end]), dtype=_DTYPES[e["dtype"]])
        out[name] = t.reshape(e["shape"])
    return out, meta


def layer_count(params):
    return len({k.split(".")[1] for k in params if k.startswith("h.")})


def gpt2_loss(params, tokens, targets, n_head, return_logits=False):
    """Mean cross-entropy of GPT-2 with parameters `params` (name -> tensor with grad)."""
    B, T = tokens.shape
    logits = gpt2_logits(params, tokens, n_head)
    loss = F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(-1))
    return (loss, logits) if return_logits else loss


def gpt2_logits(params, tokens, n_head):
    """Logits [B, T, V] of GPT-2 with parameters `params` (name -> tensor)."""
    B, T = tokens.shape
    x = params["wte.weight"][tokens] + params["wpe.weight"][:T]
    C = x.shape[-1]
    hs = C // n_head
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    for l in range(layer_count(params)):
        p = lambda s: params[f"h.{l}.{s}"]
        h = F.layer_norm(x, (C,), p("ln_1.weight"), p("ln_1.bias"), 1e-5)
        qkv = h @ p("attn.c_attn.weight") + p("attn.c_attn.bias")
        q, k, v = qkv.split(C, dim=-1)
        q, k, v = (t.view(B, T, n_head, hs).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + y @ p("attn.c_proj.weight") + p("attn.c_proj.bias")
        h = F.layer_norm(x, (C,), p("ln_2.weight"), p("ln_2.bias"), 1e-5)
        h = F.gelu(h @ p("mlp.c_fc.weight") + p("mlp.c_fc.bias"), approximate="tanh")
        x = x + h @ p("mlp.c_proj.weight") + p("mlp.c_proj.bias")
    x = F.layer_norm(x, (C,), params["ln_f.weight"], params["ln_f.bias"], 1e-5)
    return x @ params["wte.weight"].T


def init_params(n_layer, n_head, n_embd, seq_len, vocab, dtype=torch.float32, seed=0):
    """GPT-2 initialisation with fp8lm's names and shapes."""
    g = torch.Generator().manual_seed(seed)
    C = n_embd
    def normal(*shape, std=0.02):
        return (torch.randn(*shape, generator=g) * std).to(dtype)
    params = {"wte.weight": normal(vocab, C), "wpe.weight": normal(seq_len, C)}
    proj_std = 0.02 / math.sqrt(2 * n_layer)
    for l in range(n_layer):
        p = f"h.{l}."
        params.update({
            p + "ln_1.weight": torch.ones(C, dtype=dtype), p + "ln_1.bias": torch.zeros(C, dtype=dtype),
            p + "attn.c_attn.weight": normal(C, 3 * C), p + "attn.c_attn.bias": torch.zeros(3 * C, dtype=dtype),
            p + "attn.c_proj.weight": normal(C, C, std=proj_std), p + "attn.c_proj.bias": torch.zeros(C, dtype=dtype),
            p + "ln_2.weight": torch.ones(C, dtype=dtype), p + "ln_2.bias": torch.zeros(C, dtype=dtype),
            p + "mlp.c_fc.weight": normal(C, 4 * C), p + "mlp.c_fc.bias": torch.zeros(4 * C, dtype=dtype),
            p + "mlp.c_proj.weight": normal(4 * C, C, std=proj_std), p + "mlp.c_proj.bias": torch.zeros(C, dtype=dtype),
        })
    params["ln_f.weight"] = torch.ones(C, dtype=dtype)
    params["ln_f.bias"] = torch.zeros(C, dtype=dtype)
    return params
