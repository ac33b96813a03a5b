"""tradeoff.png: accuracy drop (or, for metric fidelity, 1 - cosine) against p95, one panel per runtime (and edge
target), for reading at a glance."""

from pathlib import Path

from modelfleet.api.compressedmodel import SLO
from modelfleet.api.result import ResultManifest

TRADEOFF_FILE = "tradeoff.png"


def plot_tradeoff(result: ResultManifest, slo: SLO, path: Path) -> None:
    """Marker area grows with artifact size; each target's chosen artifact is ringed; dashed lines are SLO limits."""
    import matplotlib

    matplotlib.use("Agg")  # no display in a worker pod
    import matplotlib.pyplot as plt

    panels: dict[tuple[str, str | None], list] = {}
    for artifact in result.artifacts:
        panels.setdefault((artifact.runtime, artifact.target), []).append(artifact)
    chosen = {c.chosen: c.target for c in result.choices if c.chosen}
    top1 = result.baseline.metric == "top1"
    loss = (lambda a: a.accuracy_drop_points) if top1 else (lambda a: 1 - a.fidelity.cosine)
    limit, limit_label = ((slo.max_accuracy_drop_points, f"max drop {slo.max_accuracy_drop_points:g} pt") if top1 else
                          (1 - slo.min_fidelity_cosine, f"min cosine {slo.min_fidelity_cosine:g}"))
    largest = max(a.size_bytes for a in result.artifacts) or 1
    figure, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    for ax, ((runtime, target), artifacts) in zip(axes[0], panels.items()):
        # Labels stacked in order of drop and p95: artifacts often sit on one spot (the same accuracy).
        for rank, a in enumerate(sorted(artifacts, key=lambda a: (loss(a), a.latency.p95_ms))):
            ax.scatter(a.latency.p95_ms, loss(a), s=40 + 500 * a.size_bytes / largest, alpha=0.6,
                       color="tab:red" if a.slower_than_fp32 else "tab:blue", edgecolors="black", linewidths=0.5)
            label = a.precision + (f" {a.speedup_vs_fp32:.2f}x" if a.speedup_vs_fp32 is not None else "")
            if a.name in chosen:
                ax.scatter(a.latency.p95_ms, loss(a), s=80 + 700 * a.size_bytes / largest,
                           facecolors="none", edgecolors="tab:green", linewidths=2.5)
                label += f", chosen for {chosen[a.name]}"
            ax.annotate(label, (a.latency.p95_ms, loss(a)), textcoords="offset points", xytext=(12, 14 - 11 * rank),
                        fontsize=8, arrowprops={"arrowstyle": "-", "color": "grey", "linewidth": 0.5})
        ax.axhline(limit, color="tab:orange", linestyle="--", linewidth=1, label=limit_label)
        right = 1.6 * max(a.latency.p95_ms for a in artifacts)
        budget = getattr(slo.latency_p95_ms, runtime)
        if budget is not None and budget <= right:
            ax.axvline(budget, color="tab:purple", linestyle="--", linewidth=1, label=f"p95 SLO {budget:g} ms")
        elif budget is not None:  # drawn, it would squeeze every artifact into one corner
            ax.plot([], [], color="tab:purple", linestyle="--", linewidth=1, label=f"p95 SLO {budget:g} ms (off scale)")
        ax.set_xlim(0, right)
        ax.set_title(runtime if target is None else f"{runtime} · {target}", fontsize=10)
        ax.set_xlabel("p95 latency per batch (ms)")
        ax.set_ylabel("accuracy drop (points)" if top1 else "1 - cosine vs fp32")
        ax.margins(y=0.4)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    figure.suptitle(f"{result.model_name}: marker area = artifact size, red = slower than fp32 in its runtime, "
                    "green ring = chosen; labels: precision and speed-up vs fp32", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
