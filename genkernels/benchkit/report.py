"""The report of a run: a plain-text table and a chart (speedups over eager and over torch.compile,
% of the roofline)."""
from __future__ import annotations

from typing import List, Optional


def _fmt_time(s: Optional[float]) -> str:
    if s is None or s != s:
        return "-"
    for unit, f in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if s >= f:
            return f"{s / f:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def _fmt(v: Optional[float], spec: str, suffix: str = "") -> str:
    return "-" if v is None or v != v else format(v, spec) + suffix


def _roof(r: dict) -> str:
    mark = " mm" if r.get("roofline") == "matmul" else ""
    return _fmt(r.get("pct_roofline"), ".0f", "%" + mark)


def _speedup(r: dict, ref: str) -> str:
    """"1.27x [1.31x]": the ratio of medians, and in brackets the median of the per-round ratios."""
    text = _fmt(r.get(f"speedup_vs_{ref}"), ".2f", "x")
    paired = r.get(f"paired_vs_{ref}")
    return text if paired is None or text == "-" else f"{text} [{paired:.2f}x]"


def format_table(rows: List[dict]) -> str:
    """Plain-text table: case, impl, median, GB/s, % of copy, % of the roofline (`mm`: the matmul
    FLOP rate bounds it), speedups vs eager and compile (ratios of medians; in brackets the medians of
    the per-round ratios)."""
    head = ["case", "impl", "median", "IQR", "GB/s", "%copy", "%roof", "copy GB/s", "vs eager", "vs compile"]
    peak = any(r.get("peak_extra_bytes") is not None for r in rows)
    if peak:
        head.append("peak extra")
    launches = any("launches" in r for r in rows)
    if launches:
        head.append("launches")
    lines = []
    last_case = None
    for r in rows:
        case = r.get("case", "")
        shown = case if case != last_case else ""
        last_case = case
        if "error" in r:
            lines.append([shown, r["impl"], "FAILED: " + r["error"][:60]] + [""] * (len(head) - 3))
            continue
        iqr = (100 * (r["q3_s"] - r["q1_s"]) / r["median_s"]) if r.get("q3_s") is not None else None
        lines.append([shown, r["impl"], _fmt_time(r["median_s"]), _fmt(iqr, ".0f", "%"),
                      _fmt(r["gbps"], ".1f"), _fmt(r.get("pct_copy"), ".0f", "%"), _roof(r),
                      _fmt(r.get("copy_gbps"), ".1f"), _speedup(r, "eager"), _speedup(r, "compile")])
        if peak:
            mib = r.get("peak_extra_bytes")
            lines[-1].append(_fmt(None if mib is None else mib / 2**20, ".2f", " MiB"))
        if launches:
            lines[-1].append(_fmt(r.get("launches"), "d"))
    widths = [max(len(h), *(len(l[i]) for l in lines)) if lines else len(h) for i, h in enumerate(head)]
    fmt_line = lambda cols: "  ".join(c.ljust(w) if i < 2 else c.rjust(w)  # noqa: E731
                                      for i, (c, w) in enumerate(zip(cols, widths))).rstrip()
    out = [fmt_line(head), fmt_line(["-" * w for w in widths])]
    out += [fmt_line(l) for l in lines]
    return "\n".join(out)


def _ordered(values) -> list:
    out = []
    for v in values:
        if v not in out:
            out.append(v)
    return out


# (row key, axis label, impl left out: the baseline itself, the mark of parity)
_METRICS = (("speedup_vs_eager", "speed-up over eager", "eager", 1.0),
            ("speedup_vs_compile", "speed-up over torch.compile", "compile", 1.0),
            ("pct_roofline", "% of roofline", None, 100.0))


def write_chart(path: str, meta: dict, rows: List[dict]) -> Optional[str]:
    """One row of three panels per (op, pass): speed-up over eager, over torch.compile, and % of the
    roofline that bounds the case (copy bandwidth, or the matmul FLOP rate for cases marked `[mm]`),
    one bar per impl and case. Returns an error, or None when the PNG was written."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        return f"matplotlib not importable ({e})"
    ok = [r for r in rows if "error" not in r and r.get("median_s")]
    if not ok:
        return "no results to plot"
    panels = _ordered((r.get("op", "?"), r.get("pass", "?")) for r in ok)
    impls = _ordered(r["impl"] for r in ok)
    colors = {impl: f"C{i}" for i, impl in enumerate(impls)}
    ncase = max(len({r["case"] for r in ok if (r.get("op"), r.get("pass")) == p}) for p in panels)
    fig, axes = plt.subplots(len(panels), len(_METRICS), squeeze=False,
                             figsize=(3 * max(4.0, 0.45 * ncase * len(impls) + 1.5), 3.4 * len(panels) + 0.6))
    for row_axes, (op, pass_) in zip(axes, panels):
        sel = [r for r in ok if (r.get("op"), r.get("pass")) == (op, pass_)]
        cases = _ordered(r["case"] for r in sel)
        mm = {r["case"] for r in sel if r.get("roofline") == "matmul"}
        ticks = [c.replace(f"{op} ", "").replace(f" {pass_}", "") + (" [mm]" if c in mm else "") for c in cases]
        for ax, (key, label, skip, parity) in zip(row_axes, _METRICS):
            shown = [i for i in impls if i != skip and any(r["impl"] == i and r.get(key) for r in sel)]
            width = 0.8 / max(1, len(shown))
            for j, impl in enumerate(shown):
                vals = {r["case"]: r[key] for r in sel if r["impl"] == impl and r.get(key)}
                xs = [i + (j - (len(shown) - 1) / 2) * width for i, c in enumerate(cases) if c in vals]
                ys = [vals[c] for c in cases if c in vals]
                bars = ax.bar(xs, ys, width, label=impl, color=colors[impl])
                for b, y in zip(bars, ys):
                    ax.annotate(f"{y:.2f}" if parity == 1.0 else f"{y:.0f}", (b.get_x() + b.get_width() / 2, y),
                                ha="center", va="bottom", fontsize=6)
            ax.axhline(parity, color="grey", lw=0.8, ls="--")
            ax.set_xticks(range(len(cases)))
            ax.set_xticklabels(ticks, rotation=30, ha="right", fontsize=7)
            ax.set_ylabel(label, fontsize=8)
            ax.set_title(f"{op} {pass_}: {label}", fontsize=9)
            if shown:
                ax.legend(fontsize=6)
    system = meta["system"]
    dev = system.get("gpu") if meta["device"].startswith("cuda") else \
        f"{system.get('cpu')} ({system.get('cpu_isa')}), {system.get('torch_threads')} threads"
    fig.suptitle(f"genkernels {system['genkernels']}, torch {system['torch']}, {dev}, {meta['timing']} timing, "
                 f"{meta['date'][:16]}; roofline: copy bandwidth, [mm] matmul FLOP rate", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))  # room for the title
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return None
