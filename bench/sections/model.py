"""Section "model": the network alone, torch eager vs onnxruntime on the same weights, with
GFLOP/s against the CPU's theoretical and measured (sgemm) fp32 peak."""

from __future__ import annotations

from bench.common import Section, Shared, fmt, generated_batch, log, ort_session
from bench.prose import Prose
from bench.timing import (
    cpuinfo,
    median,
    paired_ratio,
    practical_peak,
    spread,
    theoretical_peak,
    time_side_by_side,
)

TEXT = Prose(__file__)
TITLE = "Model alone: torch eager vs onnxruntime (CPU)"
COLUMNS = [
    "threads",
    "size",
    "batch",
    "repeats",
    "MFLOP/image",
    "torch images/s",
    "onnxruntime images/s",
    "ratio ORT/torch",
    "torch GFLOP/s",
    "ORT GFLOP/s",
    "ORT % of sgemm peak (per thread)",
]


def run(shared: Shared) -> Section:
    import torch

    from unsupseg.train.checkpoint import load_model

    st = shared.settings
    sec = Section("model", TITLE, TEXT("intro", threads=st.threads, repeats=st.repeats))
    model, _, _ = load_model(st.checkpoint)
    peak_t = theoretical_peak(cpuinfo(), st.threads)
    peak_p = practical_peak(st.threads, n=1024 if st.quick else 2048, repeats=3 if st.quick else st.repeats)
    sizes = (32, 128) if st.quick else (32, 128, 512)
    batches = (1, 8) if st.quick else (1, 32)
    cases = [(st.threads, size, b) for size in sizes for b in batches]
    if st.threads > 1:  # one thread: no synchronisation between threads, less sensitive to other load
        cases += [(1, 32, 1), (1, 128, batches[-1])]
    rows, results = [], []
    sessions = {}
    for threads, size, b in cases:
        torch.set_num_threads(threads)
        sess = sessions.setdefault(threads, ort_session(shared.onnx_path, threads))
        res = _measure(shared, model, sess, threads, size, b, peak_t, peak_p)
        results.append(res)
        rows.append(_row(res))
        log(
            f"model {threads} thr {size}x{size} b{b}: torch {res['torch_images_per_s']:.1f}/s "
            f"ort {res['ort_images_per_s']:.1f}/s ({res['ratio_ort_over_torch']:.2f}x)"
        )
    torch.set_num_threads(st.threads)
    sec.table(f"{shared.card.arch} width {shared.card.width}, fp32", COLUMNS, rows)
    sec.table(
        "CPU peak (fp32)",
        ["peak", "GFLOP/s", "how"],
        [
            ["theoretical", fmt(peak_t["gflops"]), peak_t["assumption"]],
            [
                "practical (sgemm)",
                fmt(peak_p["gflops"]),
                f"torch.mm of two {peak_p['n']}x{peak_p['n']} fp32 matrices, {st.threads} threads, "
                f"median of {peak_p['repeats']} (range {spread(peak_p['all'])})",
            ],
        ],
    )
    ratios = [r["ratio_ort_over_torch"] for r in results if r["threads"] == st.threads]
    met = min(ratios) >= 1.5
    sec.data = {"rows": results, "peak_theoretical": peak_t, "peak_practical": peak_p}
    sec.data["target"] = {"ask": "onnxruntime >= 1.5x torch eager", "min_ratio": min(ratios), "met": met}
    sec.notes.append(
        TEXT(
            "ratio",
            low=f"{min(ratios):.2f}",
            high=f"{max(ratios):.2f}",
            status="met" if met else "not met on every shape",
        )
    )
    sec.target("onnxruntime >= 1.5x torch eager (model alone)", f"min {min(ratios):.2f}x over shapes", met)
    return sec


def _measure(shared: Shared, model, sess, threads: int, size: int, b: int, peak_t: dict, peak_p: dict):
    """torch and onnxruntime side by side on one (threads, size, batch) case."""
    import torch

    from unsupseg.train.model import count_flops

    st = shared.settings
    flops = count_flops(shared.model_config, size, size)
    x = generated_batch(b, size, size, seed=size + b, card=shared.card)
    xt = torch.from_numpy(x)

    def torch_call(xt=xt):
        with torch.inference_mode():
            return model(xt)

    heavy = size * size * b >= 512 * 512 * 8
    reps = 3 if heavy else st.repeats
    t = time_side_by_side(
        {"torch": torch_call, "ort": lambda x=x, s=sess: s.run(x)},
        reps,
        min_time=0.1 if st.quick else 0.5,
    )
    ips_t = [b / s for s in t["torch"]]
    ips_o = [b / s for s in t["ort"]]
    gf_t, gf_o = flops * median(ips_t) / 1e9, flops * median(ips_o) / 1e9
    peak_scale = threads / st.threads  # the peaks are for st.threads cores
    return {
        "threads": threads,
        "size": size,
        "batch": b,
        "repeats": reps,
        "flops_per_image": flops,
        "torch_images_per_s": median(ips_t),
        "ort_images_per_s": median(ips_o),
        "torch_all": ips_t,
        "ort_all": ips_o,
        "ratio_ort_over_torch": paired_ratio(t["torch"], t["ort"]),
        "torch_gflops": gf_t,
        "ort_gflops": gf_o,
        "ort_fraction_of_practical_peak": gf_o / (peak_p["gflops"] * peak_scale),
        "ort_fraction_of_theoretical_peak": gf_o / (peak_t["gflops"] * peak_scale)
        if peak_t["gflops"]
        else None,
    }


def _row(res: dict) -> list:
    size = res["size"]
    return [
        res["threads"],
        f"{size}x{size}",
        res["batch"],
        res["repeats"],
        fmt(res["flops_per_image"] / 1e6),
        fmt(res["torch_images_per_s"]),
        fmt(res["ort_images_per_s"]),
        f"**{res['ratio_ort_over_torch']:.2f}x**",
        fmt(res["torch_gflops"]),
        fmt(res["ort_gflops"]),
        f"{100 * res['ort_fraction_of_practical_peak']:.0f}%",
    ]
