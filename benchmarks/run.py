"""Time course_lib's jitted train steps against PyTorch eager on the same CPU.

``python -m benchmarks [--quick] [--only vae,dcgan_b64,...]`` (or ``make bench``) runs, for each
model, a warm-up (JAX compile time reported separately), then interleaved A/B rounds of a fixed
number of steps, alternating which framework goes first. It prints a table, writes
``benchmarks/results.md`` and prints, as its last line, one JSON object of median ratios
(course_lib steps/s divided by PyTorch steps/s).

Peak memory is measured in a fresh process per model and framework: the peak resident set size
during training steps (the high-water mark is reset after the warm-up, so XLA's compiler is not
counted) above the process's size before the model was built.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CASES = ("vae", "dcgan_b64", "dcgan_b256", "char_lstm")
RESULTS = Path(__file__).resolve().parent / "results.md"


# --- data: the same batches for both frameworks --------------------------------------------------


def make_batches(case: str, n: int, seed: int = 0) -> list[tuple[np.ndarray, ...]]:
    """``n`` numpy batches of real data for ``case`` (mnist10k or tang5)."""
    from course_lib import data, pixels, rnn

    rng = np.random.default_rng(seed)
    if case == "char_lstm":
        poems = data.load("tang5", "train")
        vocab = rnn.CharVocab(poems)
        stream = vocab.encode(rnn.EOS.join(poems) + rnn.EOS)
        out = []
        for _ in range(n):
            starts = rng.integers(0, len(stream) - 51, 50)
            win = np.stack([stream[s : s + 51] for s in starts])
            out.append((win[:, :-1].astype(np.int32), win[:, 1:].astype(np.int32)))
        return out
    images = data.load("mnist10k", "train").images
    if case == "vae":
        binary = pixels.binarize(images)
        return [(binary[rng.choice(len(images), 128, replace=False)],) for _ in range(n)]
    batch = 64 if case == "dcgan_b64" else 256
    scaled = images.astype(np.float32) / 127.5 - 1.0
    return [
        (scaled[idx], np.zeros(batch, np.int32))
        for idx in (rng.choice(len(images), batch, replace=False) for _ in range(n))
    ]


def vocab_size() -> int:
    from course_lib import data, rnn

    return len(rnn.CharVocab(data.load("tang5", "train")))


# --- FLOPs, counted analytically (2 per multiply-add) --------------------------------------------


def step_flops(case: str) -> float:
    """Useful FLOPs of one train step: the backward pass counted as twice the forward.

    DCGAN: G forward + backward (3 G), D forward on real and fake + backward (6 D), D forward on
    the fakes for G's loss + backward to the images (2 D). A stride-2 transposed convolution is
    counted without the inserted zeros (each input pixel meets each kernel tap once).
    """
    if case == "vae":
        macs = 784 * 400 + 2 * 400 * 20 + 20 * 400 + 400 * 784
        return 2 * 3 * macs * 128
    if case == "char_lstm":
        per_token = 2 * (128 + 128) * 4 * 128 + 128 * vocab_size()
        return 2 * 3 * per_token * 50 * 50
    batch = 64 if case == "dcgan_b64" else 256
    g = 100 * 7 * 7 * 256 + 7 * 7 * 25 * 256 * 128 + 7 * 7 * 25 * 128 * 64 + 14 * 14 * 25 * 64
    d = 14 * 14 * 25 * 64 + 7 * 7 * 25 * 64 * 128 + 7 * 7 * 128
    return 2 * (3 * g + 8 * d) * batch


# --- the two sides -------------------------------------------------------------------------------


class JaxSide:
    name = "course_lib"

    def __init__(self, case: str, batches, convt_method: str = "auto"):
        import jax
        import jax.numpy as jnp

        from benchmarks import jax_models as jm

        self.jax = jax
        if case == "vae":
            _, self.state, self.step = jm.create_vae(0)
        elif case == "char_lstm":
            _, self.state, self.step = jm.create_char_lstm(vocab_size(), 0)
        else:
            _, self.state, self.step = jm.create_dcgan(0, convt_method)
        self.batches = [tuple(jnp.asarray(a) for a in b) for b in batches]
        self.keys = list(jax.random.split(jax.random.key(1), 4096))
        self.i = 0

    def run(self, n: int) -> float:
        """Seconds for ``n`` steps, the last result waited for."""
        t0 = time.perf_counter()
        state, step, batches, keys = self.state, self.step, self.batches, self.keys
        metrics = None
        for _ in range(n):
            i = self.i = self.i + 1
            state, metrics = step(state, batches[i % len(batches)], keys[i % len(keys)])
        self.jax.block_until_ready((state, metrics))
        self.state = state
        return time.perf_counter() - t0

    @staticmethod
    def matmul_gflops(n: int = 2048, reps: int = 10) -> float:
        from course_lib import audit

        return audit.matmul_gflops(n, reps)


class TorchSide:
    name = "PyTorch"

    def __init__(self, case: str, batches):
        import torch

        from benchmarks import torch_models as tm

        torch.manual_seed(0)
        if case == "vae":
            self.step = tm.make_vae_step(tm.VAE())
        elif case == "char_lstm":
            self.step = tm.make_lm_step(tm.CharLM(vocab_size()))
        else:
            g, d = tm.Generator(), tm.Discriminator()
            g.train()
            d.train()
            dcgan_step = tm.make_dcgan_step(g, d)
            self.step = lambda x, y: dcgan_step(x)
        # PyTorch indexes with int64 (its cross-entropy accepts no other integer type)
        as_tensor = lambda a: torch.from_numpy(  # noqa: E731
            np.ascontiguousarray(a, np.int64 if a.dtype.kind == "i" else a.dtype)
        )
        self.batches = [tuple(map(as_tensor, b)) for b in batches]
        self.i = 0
        self.threads = torch.get_num_threads()

    def choose_threads(self) -> int:
        """Keep the faster of 1 thread and all cores for this model (after a warm-up step).

        On a loaded machine PyTorch's OpenMP threads can wait on each other for a long time;
        XLA has no such setting, so PyTorch gets its best one."""
        import torch

        best = (float("inf"), torch.get_num_threads())
        for threads in sorted({1, os.cpu_count() or 1}):
            self.threads = threads
            self.run(1)
            best = min(best, (self.run(2), threads))
        self.threads = best[1]
        return self.threads

    def run(self, n: int) -> float:
        import torch

        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        t0 = time.perf_counter()
        for _ in range(n):
            self.i += 1
            self.step(*self.batches[self.i % len(self.batches)])
        return time.perf_counter() - t0

    @staticmethod
    def matmul_gflops(n: int = 2048, reps: int = 10) -> float:
        import torch

        a = torch.randn(n, n)
        a @ a
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            a @ a
            ts.append(time.perf_counter() - t0)
        return 2 * n**3 / min(ts) / 1e9


SIDES = {"jax": JaxSide, "torch": TorchSide}
SIDE_NAMES = (("course_lib", "jax"), ("pytorch", "torch"))


# --- memory probe (a fresh process per model and framework) --------------------------------------


def _proc_status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def memory_probe(case: str, side: str, convt_method: str = "auto", steps: int = 3) -> dict:
    batches = make_batches(case, 2)
    SIDES[side].matmul_gflops(256, 1)  # initialise the framework's runtime and thread pool
    base = _proc_status_kb("VmRSS")
    # only course_lib has a choice of transposed-convolution formulation
    runner = JaxSide(case, batches, convt_method) if side == "jax" else TorchSide(case, batches)
    runner.run(2)  # warm-up (compilation)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    runner.run(steps)
    return {"peak_mb": (_proc_status_kb("VmHWM") - base) / 1024}


def measure_memory(case: str, side: str, env: dict, convt_method: str) -> float | None:
    cmd = [sys.executable, "-m", "benchmarks", "--memory-probe", case, side]
    cmd += ["--convt-method", convt_method]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]
    except (subprocess.SubprocessError, ValueError, KeyError, IndexError) as err:
        print(f"  memory probe {case}/{side} failed: {err}", file=sys.stderr)
        return None


# --- the benchmark -------------------------------------------------------------------------------


def quantiles(values):
    q = np.percentile(values, [0, 25, 50, 75, 100])
    return {k: float(v) for k, v in zip(("min", "p25", "median", "p75", "max"), q, strict=True)}


def bench_case(case: str, rounds: int, round_s: float, convt_method: str = "auto") -> dict:
    batches = make_batches(case, 8)
    jax_side, torch_side = JaxSide(case, batches, convt_method), TorchSide(case, batches)
    t0 = time.perf_counter()
    jax_side.run(1)
    first = time.perf_counter() - t0
    t_jax = jax_side.run(2) / 2
    threads = torch_side.choose_threads()  # also PyTorch's warm-up (allocator, oneDNN caches)
    t_torch = torch_side.run(2) / 2
    compile_s = max(first - t_jax, 0.0)
    n_jax = max(1, round(round_s / t_jax))
    n_torch = max(1, round(round_s / t_torch))
    rates = {"jax": [], "torch": []}
    for r in range(rounds):
        order = (("jax", jax_side, n_jax), ("torch", torch_side, n_torch))
        for name, side, n in order if r % 2 == 0 else order[::-1]:
            rates[name].append(n / side.run(n))
    ratios = [j / t for j, t in zip(rates["jax"], rates["torch"], strict=True)]
    return {
        "compile_s": compile_s,
        "torch_threads": threads,
        "steps_per_round": {"jax": n_jax, "torch": n_torch},
        "jax": quantiles(rates["jax"]),
        "torch": quantiles(rates["torch"]),
        "ratio": statistics.median(rates["jax"]) / statistics.median(rates["torch"]),
        "round_ratios": quantiles(ratios),
        "flops": step_flops(case),
    }


def versions() -> dict:
    import flax
    import jax
    import optax
    import torch

    return {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": __import__("jaxlib").__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "torch": torch.__version__,
    }


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {"cpu": cpu, "cores": os.cpu_count(), "load_avg_1m": round(load[0], 2)}


def write_results(path: Path, info: dict, results: dict, args) -> None:
    ceiling = max(info["matmul_gflops"].values())
    lines = [
        "# Speed: course_lib (JAX, jitted) against PyTorch (eager), same CPU",
        "",
        "Written by `python -m benchmarks` (`make bench`); do not edit by hand.",
        "",
        f"- Machine: {info['machine']['cpu']}, {info['machine']['cores']} logical cores, "
        f"1-minute load average at the start {info['machine']['load_avg_1m']}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
        f"- Date (UTC): {info['date']}; mode: {'quick' if args.quick else 'full'}, "
        f"{args.rounds} interleaved rounds of about {args.round_s} s per framework and model; "
        f"DCGAN transposed convolutions: `{args.convt_method}` (benchmarks/layers.py)",
        "- fp32 matmul ceiling (2048x2048, best of 10): "
        + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in info["matmul_gflops"].items()),
        "",
        "| model | course_lib steps/s (p25-p75) | PyTorch steps/s (p25-p75) | ratio "
        "(per-round min-max) | compile s | GFLOP/step | course_lib % of peak | PyTorch % of peak "
        "| peak MB course_lib / PyTorch | PyTorch threads |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case, r in results.items():
        j, t, rr = r["jax"], r["torch"], r["round_ratios"]
        gf = r["flops"] / 1e9
        mem = r.get("memory", {})
        fmt = lambda v: "n/a" if v is None else f"{v:.0f}"  # noqa: E731
        lines.append(
            f"| {case} | {j['median']:.3g} ({j['p25']:.3g}-{j['p75']:.3g}) "
            f"| {t['median']:.3g} ({t['p25']:.3g}-{t['p75']:.3g}) "
            f"| **{r['ratio']:.2f}x** ({rr['min']:.2f}-{rr['max']:.2f}) "
            f"| {r['compile_s']:.1f} | {gf:.2f} "
            f"| {100 * gf * j['median'] / ceiling:.0f}% | {100 * gf * t['median'] / ceiling:.0f}% "
            f"| {fmt(mem.get('jax'))} / {fmt(mem.get('torch'))} | {r['torch_threads']} |"
        )
    lines += [
        "",
        "Ratio: median course_lib steps/s over median PyTorch steps/s. Peak: the faster of the "
        "two frameworks' matmul rates; a step's share is its analytically counted useful FLOPs "
        "(backward = 2x forward, no FLOPs for the zeros of strided transposed convolutions) "
        "times steps/s. Peak MB: resident memory a fresh process gains while training, above "
        "its size before the model was built. PyTorch threads: the faster of 1 and all cores, "
        "chosen per model in the warm-up (on a loaded CPU its OpenMP threads can stall each "
        "other). On a CPU shared with other jobs absolute timings are noisy; interleaving the "
        "rounds keeps the ratio fair.",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (~2-3 min)")
    parser.add_argument("--only", default=",".join(CASES), help="comma-separated subset of models")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved A/B rounds")
    parser.add_argument("--round-s", type=float, default=None, help="seconds per round and side")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory probes")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file (markdown)")
    parser.add_argument(
        "--convt-method",
        default="auto",
        choices=["auto", "phase_dot", "phase_conv", "dilated"],
        help="the DCGAN's transposed convolution (benchmarks/layers.py); 'auto' is course_lib's "
        "default, 'dilated' the plain jax.lax.conv_transpose",
    )
    parser.add_argument(
        "--memory-probe", nargs=2, metavar=("MODEL", "SIDE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)

    if args.memory_probe:
        print(json.dumps(memory_probe(*args.memory_probe, args.convt_method)))
        return 0
    args.rounds = args.rounds or (3 if args.quick else 7)
    args.round_s = args.round_s or (1.0 if args.quick else 2.0)
    cases = [c.strip() for c in args.only.split(",") if c.strip()]
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {', '.join(CASES)}")

    # one compilation cache for this run, so the memory probes do not recompile
    cache = tempfile.mkdtemp(prefix="course_lib_bench_")
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=cache)
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.update(env)

    info = {
        "machine": machine(),
        "versions": versions(),
        "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }
    info["matmul_gflops"] = {
        "course_lib (XLA)": JaxSide.matmul_gflops(),
        "PyTorch": TorchSide.matmul_gflops(),
    }
    print(
        f"{info['machine']['cpu']} ({info['machine']['cores']} cores); fp32 matmul: "
        + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in info["matmul_gflops"].items()),
        flush=True,
    )
    results = {}
    for case in cases:
        print(f"{case}: warm-up and {args.rounds} interleaved rounds ...", flush=True)
        r = results[case] = bench_case(case, args.rounds, args.round_s, args.convt_method)
        if not args.no_memory:
            r["memory"] = {
                side: measure_memory(case, side, env, args.convt_method) for side in SIDES
            }
        print(
            f"  course_lib {r['jax']['median']:.2f} steps/s, PyTorch {r['torch']['median']:.2f} "
            f"steps/s, ratio {r['ratio']:.2f}x (rounds {r['round_ratios']['min']:.2f}-"
            f"{r['round_ratios']['max']:.2f}), compile {r['compile_s']:.1f} s, "
            f"PyTorch threads {r['torch_threads']}",
            flush=True,
        )
    write_results(args.out, info, results, args)
    raw = {"info": info, "args": {k: str(v) for k, v in vars(args).items()}, "results": results}
    args.out.with_suffix(".json").write_text(json.dumps(raw, indent=1), encoding="utf-8")
    print(f"wrote {args.out}", flush=True)
    summary = {case: round(r["ratio"], 3) for case, r in results.items()}
    summary["matmul_gflops"] = {k: round(v) for k, v in info["matmul_gflops"].items()}
    summary["steps_per_s"] = {
        case: {
            "course_lib": round(r["jax"]["median"], 2),
            "pytorch": round(r["torch"]["median"], 2),
        }
        for case, r in results.items()
    }
    print(json.dumps(summary, ensure_ascii=False))
    return 0
