#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets into fuzz/corpus/<target>/: a few valid inputs
and a few slightly broken ones per target, all small. Deterministic; run it again after
changing it (python3 fuzz/make_corpus.py) and commit the result."""
import json
import os
import shutil
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# --- safetensors -------------------------------------------------------------------------

DTYPE_SIZE = {"F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I32": 4, "I64": 8,
              "U8": 1, "U16": 2}


def safetensors(tensors, metadata=None, pad=True):
    """tensors: [(name, dtype, shape)]; data is a counting byte pattern."""
    header, offset = {}, 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape in tensors:
        n = DTYPE_SIZE[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":"))
    if pad:
        text += " " * ((-(8 + len(text))) % 64)
    body = bytes(i * 37 % 251 for i in range(offset))
    return struct.pack("<Q", len(text)) + text.encode() + body


def raw_safetensors(header_text, body=b""):
    return struct.pack("<Q", len(header_text)) + header_text.encode() + body


def safetensors_corpus():
    t = "fuzz_safetensors"
    put(t, "valid_f32", safetensors([("wte", "F32", [4, 3]), ("ln.bias", "F32", [3])],
                                    {"format": "pt", "level": "O2"}))
    put(t, "valid_all_dtypes", safetensors([
        ("a.master", "F32", [2, 2]), ("a.m1", "F8_E4M3", [4]), ("a.m2", "F8_E5M2", [4]),
        ("b", "F16", [3]), ("c", "BF16", [1, 2]), ("d", "I32", [2]), ("e", "I64", [1]),
        ("f", "U8", [5]), ("g", "U16", [2, 1, 1]), ("scalar", "F32", []),
        ("empty", "F32", [0, 7])]))
    put(t, "valid_no_tensors", safetensors([], pad=False))
    put(t, "valid_metadata_only", safetensors([], {"step": "10"}))
    put(t, "valid_unpadded", safetensors([("x", "U16", [3])], pad=False))
    # Slightly broken: each is one small step away from a valid file.
    put(t, "bad_truncated_data", safetensors([("x", "F32", [8])])[:-5])
    put(t, "bad_overlap", raw_safetensors(
        '{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},'
        '"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}', bytes(8)))
    put(t, "bad_span", raw_safetensors(
        '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}', bytes(8)))
    put(t, "bad_dtype", raw_safetensors(
        '{"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}', bytes(8)))
    put(t, "bad_duplicate", raw_safetensors(
        '{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
        '"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}', bytes(2)))
    put(t, "bad_shape_overflow", raw_safetensors(
        '{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}'))
    put(t, "bad_negative", raw_safetensors(
        '{"a":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}}', bytes(1)))
    put(t, "bad_header_len", struct.pack("<Q", 1 << 40) + b"{}")
    put(t, "bad_metadata_value", raw_safetensors('{"__metadata__":{"k":1}}'))
    put(t, "bad_json", raw_safetensors('{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,'))


# --- token files -------------------------------------------------------------------------

def token_file(tokens, magic=20240520, version=1, count=None):
    header = [magic, version, len(tokens) if count is None else count] + [0] * 253
    return struct.pack("<256i", *header) + struct.pack(f"<{len(tokens)}H", *tokens)


def token_corpus():
    t = "fuzz_token_file"
    put(t, "valid_small", token_file([464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13]))
    put(t, "valid_empty", token_file([]))
    put(t, "valid_byte_vocab", token_file([ord(c) for c in "the cat sat."] + [256]))
    put(t, "valid_windows", token_file([(i * 7919) % 50257 for i in range(80)]))
    put(t, "valid_vocab_edges", token_file([0, 256, 257, 50256, 50257, 65535]))
    put(t, "bad_magic", token_file([1, 2, 3], magic=20240521))
    put(t, "bad_version", token_file([1, 2, 3], version=2))
    put(t, "bad_count", token_file([1, 2, 3], count=4))
    put(t, "bad_negative_count", token_file([1, 2, 3], count=-1))
    put(t, "bad_odd_size", token_file([1, 2, 3]) + b"\x00")
    put(t, "bad_short_header", token_file([])[:100])


# --- trainer.json ------------------------------------------------------------------------

def scaling(finite, nonfinite=0, zero=0):
    """A state a run can produce: `finite` amaxes recorded into a window of 16 (and
    `nonfinite` skipped), so fill and position follow from the counts."""
    filled = min(finite, 16)
    history = [0.25 + i / 64 for i in range(filled)] + [0.0] * (16 - filled)
    return {"scale": 256.0, "scale_inv": 0.00390625, "history": history,
            "filled": filled, "pos": finite % 16, "jit_next": nonfinite > 0,
            "counter": finite + nonfinite, "zero_amax": zero, "nonfinite_amax": nonfinite}


def trainer(scalings, model=None, step=100, level="O2"):
    return {
        "step": step, "seed": 1337, "level": level, "batch_size": 16, "grad_accum": 1,
        "data": {"train": "data/brown/train.bin", "next_step": step},
        "model": model if model is not None else TINY,
        "fp8": {"recipe": "delayed", "amax_window": 16, "margin": 0, "mx_grad_format": "e4m3"},
        "tokenizer": "gpt2", "tokenizer_dir": "", "world_size": 1,
        "grad_scaling_mu": 1.0, "scaling": scalings}


# Level O2 has 8 scaling states per layer (fp32 and bf16 none); fuzz_trainer_json puts an
# O2 optimizer file of step 100 beside the input.
TINY = {"preset": "tiny", "n_layer": 2, "n_head": 2, "n_embd": 64, "seq_len": 64,
        "vocab_size": 512}
ONE_LAYER = dict(TINY, n_layer=1)
D6 = {"preset": "d6", "n_layer": 6, "n_head": 6, "n_embd": 384, "seq_len": 256,
      "vocab_size": 50257}


def trainer_corpus():
    t = "fuzz_trainer_json"
    varied = [scaling(39, 1, 2), scaling(7), scaling(0), scaling(15), scaling(32, 3),
              scaling(16), scaling(1), scaling(17, 0, 17)] * 2
    put(t, "valid_tiny", json.dumps(trainer(varied), indent=1))
    put(t, "valid_one_layer", json.dumps(trainer([scaling(100 + i) for i in range(8)],
                                                 ONE_LAYER)))
    put(t, "other_level_no_scaling", json.dumps(trainer([], D6, level="bf16")))
    eight = [scaling(20)] * 8
    put(t, "bad_history_length", json.dumps(trainer(
        [dict(scaling(1), history=[1.0] * 15)] + eight[1:], ONE_LAYER)))
    put(t, "bad_field_type", json.dumps(trainer([dict(scaling(2), pos="2")] + eight[1:],
                                                ONE_LAYER)))
    put(t, "bad_missing_field", json.dumps(trainer(
        [{k: v for k, v in scaling(2).items() if k != "filled"}] + eight[1:], ONE_LAYER)))
    put(t, "bad_counts", json.dumps(trainer([dict(scaling(20), counter=21)] + eight[1:],
                                            ONE_LAYER)))
    put(t, "bad_state_count", json.dumps(trainer(eight[1:], ONE_LAYER)))
    put(t, "bad_model", json.dumps(trainer(eight, dict(ONE_LAYER, n_head=3))))
    put(t, "bad_step", json.dumps(trainer(eight, ONE_LAYER, step=99)))
    put(t, "bad_not_object", "[1, 2, 3]")
    put(t, "bad_json", json.dumps(trainer(eight, ONE_LAYER))[:-40])


# --- configuration TOML ------------------------------------------------------------------

FULL_CONFIG = """\
[model]
preset = "d6"
n_layer = 0
n_head = 0
n_embd = 0
seq_len = 128

[data]
train = "data/brown/train.bin"
val = "data/brown/val.bin"
tokenizer = "gpt2"
tokenizer_dir = "data/gpt2"

[train]
batch_size = 16
grad_accum = 1
steps = 350
lr = 0.001
min_lr = 0.0001
warmup_steps = 30
weight_decay = 0.10000000000000001
beta1 = 0.90000000000000002
beta2 = 0.94999999999999996
grad_clip = 1
eval_every = 50
eval_batches = 4
checkpoint_every = 100
seed = 1337
init_from = ""
out_dir = "runs/default"
threads = 0
comm_timeout = 900

[parallel]
tp = 1
sequence = true
gather = "level"
wire = "bf16"
pp = 1
pp_wire = "bf16"

[precision]
level = "O2"
recipe = "delayed"
amax_window = 16
margin = 0
grad_scaling = "auto"
master = "level"
m1 = "level"
m2 = "level"

[telemetry]
every = 25
what_if = "none"
underflow_alarm = 0.25
saturation_alarm = 0.001
kurtosis_alarm = 8
loss_spike_alarm = 1.5
stop_on_alarm = false

[finetune]
objective = "lm"
beta = 0.10000000000000001
samples = 8
clip = 0.20000000000000001
kl = 0.040000000000000001
temperature = 1
max_new_tokens = 16
reward_command = ""
lora_rank = 0
lora_alpha = 16
lora_targets = "all"
"""


def config_corpus():
    t = "fuzz_config"
    put(t, "valid_full", FULL_CONFIG)
    put(t, "valid_tiny", '[model]\npreset = "tiny"\nseq_len = 32\n\n[train]\nsteps = 5\n'
                         'lr = 3e-4\nmin_lr = 0.0\n\n[precision]\nlevel = "O3"\n'
                         'recipe = "jit"\ngrad_scaling = "sqrt"\n')
    put(t, "valid_decoupling", '[precision]\nlevel = "O2"\nm2 = "e4m3"\n')
    put(t, "valid_byte", '[data]\ntokenizer = "byte"\ntrain = \'runs/x y/train.bin\'\n'
                         '[train]\nweight_decay = 0\nbeta2 = 0.999\ngrad_clip = 0\n'
                         'seed = -9223372036854775808\n')
    put(t, "valid_empty", "")
    put(t, "valid_overrides", "model.preset=tiny\ntrain.lr=0.002\nprecision.level=O1\n"
                              "data.tokenizer=byte\ntrain.out_dir=runs/\u00e9t\u00e9\n"
                              "precision.amax_window=1024\ntrain.seed=42")
    put(t, "bad_unknown_key", "[train]\nlearning_rate = 0.1\n")
    put(t, "bad_type", '[train]\nsteps = "many"\n')
    put(t, "bad_range", "[model]\nn_layer = 4294967296\n")
    put(t, "bad_value", "[precision]\nmargin = 9\n")
    put(t, "bad_not_table", 'model = "d6"\n')
    put(t, "bad_toml", "[train\nlr = \n")
    put(t, "bad_overrides", "train.lr=-1\nmodel.preset\nnope.key=1\n")


# --- tokenizer ---------------------------------------------------------------------------

def tokenizer_corpus():
    t = "fuzz_tokenizer"
    put(t, "english", "Training in eight bits: the scales come from an amax history, and "
                      "the loss \"should not\" diverge (it did once, at step 2,048).\n")
    put(t, "contractions", "I'll say it's what we've done, they're sure he'd've; 'S 'T 'LL")
    put(t, "whitespace", "  leading\n\n\ttabs   and  spaces \r\n trailing   \n\n")
    put(t, "numbers", "1234567890 3.14159 -42 1e10 \u0661\u0662\u0663 \u00bd")
    put(t, "unicode", "na\u00efve caf\u00e9 \u4e2d\u6587 \u0440\u0443\u0441\u0441\u043a\u0438\u0439 "
                      "\U0001f600\U0001f680 e\u0301 \u200d \u3000x")
    put(t, "special", "<|endoftext|> ###!!!??? ~`@$%^&*()_+-={}[]|\\:;\"<>,./")
    put(t, "invalid_utf8", b"ok \xff\xfe \xc3 \xe2\x82 \xed\xa0\x80 \xf4\x90\x80\x80 \xc0\xaf end")
    put(t, "binary", bytes(range(256)))


def main():
    shutil.rmtree(ROOT, ignore_errors=True)
    safetensors_corpus()
    token_corpus()
    trainer_corpus()
    config_corpus()
    tokenizer_corpus()
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(ROOT) for f in fs)
    print(f"fuzz/corpus: {total} bytes")


if __name__ == "__main__":
    main()
