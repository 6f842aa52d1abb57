"""The audit of a 7B-shaped language model folder: peak memory and time against reading its shards once.

Writes a Llama-2-7B-shaped checkpoint (bf16, ~2 GB shards, 6.7B weights) at 50% unstructured sparsity
with planted dead MLP neurons and attention heads, audits it with ``connectome audit FOLDER``, and
does the same for a 2:4 variant with ``--claim-structure 2:4``. Each step runs in its own process;
peak RSS is that process's. "read" reads every byte of every shard once. Both are timed twice: cold
(the shards evicted from the page cache first, as after a download larger than the cache or a reboot)
and warm (the shards in the page cache, so that a read costs only the copy). "direct" reads the same
bytes cold past the page cache (O_DIRECT; "-" where the file system refuses it): the disk's own time.

Usage: python benchmarks/bench_llm_audit.py [--dir DIR] [--layers 32] [--keep] [--reuse] [--repeat N]
(``--layers 2`` writes a small model of the same widths in a minute.)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import torch

HIDDEN, INTER, HEADS, VOCAB = 4096, 11008, 32, 32000
HEAD_DIM = HIDDEN // HEADS
SHARD_BYTES = 2 << 30
def plants(layers: int) -> tuple[dict[int, range], dict[int, tuple[int, ...]]]:
    """Blocks with dead MLP neurons (up_proj rows zeroed) and dead heads (o_proj columns zeroed)."""
    neurons = {layers // 8: range(0, 100), (17 * layers) // 32: range(500, 560)}
    heads = {(5 * layers) // 32: (1, 7), (20 * layers) // 32: (30,)}
    return neurons, heads


def _weights(shape: tuple[int, ...], gen: torch.Generator, two_four: bool) -> torch.Tensor:
    """bf16 values below 2 in magnitude (no NaN/Inf bit patterns), half of them zero."""
    bits = torch.randint(-(1 << 15), 1 << 15, shape, dtype=torch.int32, generator=gen).to(torch.int16)
    bits &= 0x3FFF  # exponent below 0x80: finite, under 2
    bits |= 0x0080  # never a zero or subnormal by chance
    if two_four:
        keep = torch.rand(*shape[:-1], shape[-1] // 4, 4, generator=gen).argsort(-1).argsort(-1) < 2
        bits *= keep.reshape(shape)
    else:
        bits *= torch.rand(shape, generator=gen) < 0.5
    return bits.view(torch.bfloat16)


def _tensors(layers: int, two_four: bool):
    gen = torch.Generator().manual_seed(0)
    dead_neurons, dead_heads = plants(layers)
    yield "model.embed_tokens.weight", _weights((VOCAB, HIDDEN), gen, False)
    for i in range(layers):
        p = f"model.layers.{i}."
        for name, shape in (("self_attn.q_proj", (HIDDEN, HIDDEN)), ("self_attn.k_proj", (HIDDEN, HIDDEN)),
                            ("self_attn.v_proj", (HIDDEN, HIDDEN)), ("self_attn.o_proj", (HIDDEN, HIDDEN)),
                            ("mlp.gate_proj", (INTER, HIDDEN)), ("mlp.up_proj", (INTER, HIDDEN)),
                            ("mlp.down_proj", (HIDDEN, INTER))):
            w = _weights(shape, gen, two_four)
            if name == "mlp.up_proj" and i in dead_neurons:
                w[list(dead_neurons[i])] = 0
            if name == "self_attn.o_proj" and i in dead_heads:
                for h in dead_heads[i]:
                    w[:, h * HEAD_DIM : (h + 1) * HEAD_DIM] = 0
            yield p + name + ".weight", w
        for norm in ("input_layernorm", "post_attention_layernorm"):
            yield p + norm + ".weight", torch.ones(HIDDEN, dtype=torch.bfloat16)
    yield "model.norm.weight", torch.ones(HIDDEN, dtype=torch.bfloat16)
    yield "lm_head.weight", _weights((VOCAB, HIDDEN), gen, False)


def write(folder: str, layers: int, two_four: bool) -> int:
    """The checkpoint, as save_pretrained lays it out; returns its size in bytes."""
    import transformers
    from safetensors.torch import save_file

    os.makedirs(folder, exist_ok=True)
    cfg = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=INTER,
                                   num_hidden_layers=layers, num_attention_heads=HEADS, num_key_value_heads=HEADS,
                                   tie_word_embeddings=False, torch_dtype="bfloat16")
    cfg.architectures = ["LlamaForCausalLM"]
    cfg.save_pretrained(folder)
    shard: dict[str, torch.Tensor] = {}
    names: list[list[str]] = []
    size = total = 0

    def flush() -> None:
        nonlocal shard, size
        if shard:
            names.append(list(shard))
            save_file(shard, os.path.join(folder, f"part-{len(names):05d}.safetensors"), metadata={"format": "pt"})
            shard, size = {}, 0

    for name, t in _tensors(layers, two_four):
        nbytes = t.numel() * t.element_size()
        if size + nbytes > SHARD_BYTES:
            flush()
        shard[name], size, total = t, size + nbytes, total + nbytes
    flush()
    n = len(names)
    weight_map = {}
    for i, keys in enumerate(names):
        final = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        os.replace(os.path.join(folder, f"part-{i + 1:05d}.safetensors"), os.path.join(folder, final))
        weight_map.update({k: final for k in keys})
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f)
    return total


# the child reports its own peak: VmHWM starts afresh at exec (ru_maxrss keeps the forking parent's);
# at exit, or at os._exit (the script leaves an audit that way, skipping the interpreter's teardown)
PEAK = """
import atexit, os, sys
def _peak():
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
    with open(os.environ["BENCH_PEAK"], "w") as f:
        f.write(str(kb))
atexit.register(_peak)
_exit = os._exit
def _exit_after_peak(code):
    _peak()
    _exit(code)
os._exit = _exit_after_peak
"""

# every byte of every shard into a reused buffer: what reading the checkpoint once costs (safetensors'
# get_tensor maps a tensor without touching its pages, so it would time nothing)
READ = PEAK + """
import glob, sys
buf = bytearray(64 << 20)
view = memoryview(buf)
for shard in sorted(glob.glob(sys.argv[1] + "/*.safetensors")):
    with open(shard, "rb", buffering=0) as f:
        while f.readinto(view):
            pass
"""

# the same bytes past the page cache (O_DIRECT, one 64 MiB request at a time): what the disk itself takes,
# without the kernel's work of filling and copying cache pages (which dominates a buffered read on some VMs)
READ_DIRECT = PEAK + """
import glob, mmap, os, sys
buf = mmap.mmap(-1, 64 << 20)  # page-aligned, as O_DIRECT needs
for shard in sorted(glob.glob(sys.argv[1] + "/*.safetensors")):
    fd = os.open(shard, os.O_RDONLY | os.O_DIRECT)
    try:
        while os.readv(fd, [buf]) == len(buf):
            pass
    finally:
        os.close(fd)
"""

# what the ``connectome`` script runs (its entry point starts reading a folder before the imports)
AUDIT = PEAK + """
import sys
from connectome_cli.entry import run
try:
    run()
except SystemExit as e:
    sys.exit(e.code)
"""


def _secs(m: tuple[float, float, int]) -> str:
    return f"{m[0]:.1f}s" if m[2] == 0 else "-"


def evict(folder: str) -> None:
    """Drop the shards' pages from the page cache (clean pages of files this user can read: no root needed)."""
    for name in os.listdir(folder):
        fd = os.open(os.path.join(folder, name), os.O_RDONLY)
        try:
            os.fsync(fd)  # written pages must be clean to be dropped
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def measure(code: str, *args: str) -> tuple[float, float, int]:
    """(seconds, peak RSS in GiB, exit status) of ``code`` run in a fresh Python."""
    with tempfile.NamedTemporaryFile("r") as peak:
        start = time.perf_counter()
        rc = subprocess.call([sys.executable, "-c", code, *args], stdout=subprocess.DEVNULL,
                             env={**os.environ, "BENCH_PEAK": peak.name})
        seconds = time.perf_counter() - start
        kb = int(peak.read() or 0)
    return seconds, kb / (1 << 20), rc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=None, help="Where to write the checkpoints (default: a temp folder).")
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--keep", action="store_true", help="Keep the checkpoints.")
    ap.add_argument("--reuse", action="store_true", help="Audit checkpoints a --keep run left in --dir.")
    ap.add_argument("--repeat", type=int, default=1, help="Runs per checkpoint; the median run is shown.")
    ap.add_argument("--variants", default="50%,2:4", help="Which checkpoints: 50%% (unstructured), 2:4, or both.")
    args = ap.parse_args()
    root = args.dir or tempfile.mkdtemp(prefix="bench-llm-")
    print(f"{'checkpoint':<10} {'size':>7} {'read cold':>10} {'audit cold':>11} {'ratio':>6} {'direct':>7} "
          f"{'ratio':>6} {'read warm':>10} {'audit warm':>11} {'ratio':>6} {'audit RSS':>10} {'dead neurons':>13} "
          f"{'dead heads':>11}")
    for kind in args.variants.split(","):
        folder = os.path.join(root, "llama7b-" + kind.replace(":", "-").replace("%", "pct"))
        index = os.path.join(folder, "model.safetensors.index.json")
        if args.reuse and os.path.exists(index):
            size = json.load(open(index))["metadata"]["total_size"]
        else:
            size = write(folder, args.layers, kind == "2:4")
        report = os.path.join(root, f"audit-{kind.replace(':', '-')}.json")
        audit = ["audit", folder, "--format", "json", "-o", report] + (["--claim-structure", "2:4"] if kind == "2:4" else [])
        runs = []
        for _ in range(args.repeat):  # each audit right after the read it is compared with
            evict(folder)
            direct = measure(READ_DIRECT, folder)
            evict(folder)
            cold_read = measure(READ, folder)
            evict(folder)
            cold_audit = measure(AUDIT, *audit)
            warm_read = min(measure(READ, folder) for _ in range(2))  # the first put the shards in the cache
            warm_audit = measure(AUDIT, *audit)
            runs.append((cold_read, cold_audit, warm_read, warm_audit, direct))
            if args.repeat > 1:
                print(f"  run {len(runs)}: cold {cold_read[0]:.1f}s / {cold_audit[0]:.1f}s (direct read "
                      f"{_secs(direct)}), warm {warm_read[0]:.1f}s / {warm_audit[0]:.1f}s", flush=True)
        # the run whose cold ratio is the median, whole (its four figures were measured together)
        runs.sort(key=lambda r: r[1][0] / r[0][0])
        cold_read, cold_audit, warm_read, warm_audit, direct = runs[len(runs) // 2]
        rc = max(max(r[1][2], r[3][2]) for r in runs)
        blocks = json.load(open(report))["blocks"] if os.path.exists(report) else []
        neurons = sum(b["dead_neurons"] for b in blocks)
        heads = sum(len(b["dead_heads"]) for b in blocks)
        dead_neurons, dead_heads = plants(args.layers)
        want_n = sum(len(r) for r in dead_neurons.values())
        want_h = sum(len(h) for h in dead_heads.values())
        print(f"{kind:<10} {size / 2**30:>5.1f}GB {cold_read[0]:>9.1f}s {cold_audit[0]:>10.1f}s "
              f"{cold_audit[0] / cold_read[0]:>5.2f}x {_secs(direct):>7} "
              f"{(f'{cold_audit[0] / direct[0]:.2f}x' if direct[2] == 0 else '-'):>6} "
              f"{warm_read[0]:>9.1f}s {warm_audit[0]:>10.1f}s "
              f"{warm_audit[0] / warm_read[0]:>5.2f}x {max(cold_audit[1], warm_audit[1]):>8.2f}GB "
              f"{neurons:>6}/{want_n:<6} {heads:>5}/{want_h:<5}" + ("" if rc in (0, 1) else f"  (audit exit {rc})"))
        if not args.keep:
            shutil.rmtree(folder)
    if not args.keep and not args.dir:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
