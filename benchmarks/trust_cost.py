"""What QC + OOD add to the per-cell time of the INT8 exact row, both measured in one run (SYNTHETIC cells).

    python benchmarks/trust_cost.py                    # SE-ResNeXt50 INT8 IR from the standard bench's cache
    python benchmarks/trust_cost.py --arch seresnext_tiny --rounds 3   # smoke-test the script (seconds)

The row is the standard bench's INT8 exact row, ``openvino int8+bf16``: the paper's network exported
to an OpenVINO INT8 IR (profile ``openvino-int8``), full 8-rotation TTA, float layers in bf16 (f32
where the CPU has no bf16), batch 1. The IR is the one ``benchmarks/standard.py`` caches in
``~/.cache/edgeleuk/bench-standard/`` (exported here, the same way, when missing or stale).

Two classifiers on the same IR in the same process:

* ``off``: the IR as exported (no OOD model), ``qc=False``: no quality checks, no embedding
  fetched: the INT8 exact row itself;
* ``on``: a copy whose metadata carries quality ranges (``quality.fit_ranges`` on ``--fit`` drawn
  training cells) and an OOD model (``quality.fit_ood`` on those cells' embeddings from this IR),
  ``qc=True``: every call also runs the checks, fetches the embedding and scores it.

Each round times one ``predict_arrays`` call per cell (one decoded 450x450 cell each) with each
classifier, the two in alternating order, after a warm-up. Reported: p50/p90/p99 per cell of each,
the ratio of the medians and the median of the paired differences (the same cell, the same round:
on shared cores, the least noisy estimate of what the checks add), and the checks alone (QC reasons
and the OOD score of one cell, as the ``on`` classifier calls them) timed in the same run. Writes TRUST_COST.md and
TRUST_COST.json beside this script (``--out``). Every figure is SYNTHETIC.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from standard import StandardConfig, _exported_from, benchmark_checkpoint, synthetic_data  # noqa: E402

#: At most this share of the INT8 exact row's per-cell time may go to QC + OOD.
BUDGET = 0.05


def int8_ir(cfg: StandardConfig) -> Path:
    """The standard bench's INT8 IR of its checkpoint (exported the same way when missing or stale)."""
    from edgeleuk.exporting import export_model, load_profile
    from edgeleuk.modeling.checkpoint import sha256_file

    data = synthetic_data(cfg)
    ckpt = benchmark_checkpoint(cfg, data)
    out = cfg.work / f"{cfg.arch}-int8.xml"
    if not _exported_from(out, sha256_file(ckpt)):
        profile = load_profile("openvino-int8")
        profile = profile.replace(parity_n=min(profile.parity_n, cfg.gate_n))
        print(export_model(ckpt, out=out, profile=profile, data=data).describe(), file=sys.stderr)
    return out


def with_trust(ir: Path, out: Path, fit: int, seed: int, precision: str,
               threads: int) -> tuple[Path, dict[str, Any], np.ndarray]:
    """A copy of ``ir`` with quality ranges and an OOD model fitted on drawn cells, and their embeddings."""
    from edgeleuk import quality
    from edgeleuk.io.modelfile import read_model_meta
    from edgeleuk.io.modelwrite import write_model_with_meta
    from edgeleuk.runtime.classifier import Classifier
    from edgeleuk.synth.shifts import normal_cells

    meta, _ = read_model_meta(ir)
    cells = np.stack(list(normal_cells(fit, seed)))
    clf = Classifier.load(ir, "openvino", precision=precision, threads=threads, batch_size=8, qc=False)
    _, embeddings = clf.embed_arrays(cells)
    ranges = quality.fit_ranges(iter(cells), meta.preprocess, how="trust_cost")
    ood = quality.fit_ood(embeddings)
    write_model_with_meta(ir, out, meta.replace(quality=ranges, ood=ood))
    return out, {"fit_cells": fit, "ood_dim": ood.dim, "ood_k": ood.k,
                 "ood_json_chars": len(json.dumps(ood.to_dict()))}, embeddings


def _stats(ms: Sequence[float]) -> dict[str, float]:
    a = np.asarray(ms, dtype=np.float64)
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean()), "n": int(a.size)}


def _checks_ms(clf: Any, cells: np.ndarray, embeddings: np.ndarray, rounds: int) -> dict[str, float]:
    """Milliseconds of what ``on`` adds to a call: QC reasons and the OOD score of one embedding."""
    from edgeleuk import quality

    ms = []
    for _ in range(rounds):
        for i, cell in enumerate(cells):
            start = time.perf_counter()
            clf.trust.reasons(cell)
            quality.ood_scores(clf.trust.ood, embeddings[i % len(embeddings)][None])
            ms.append(1000 * (time.perf_counter() - start))
    return _stats(ms)


def measure(models: dict[str, Path], cells: np.ndarray, rounds: int, warmup: int, precision: str,
            threads: int, embeddings: np.ndarray) -> dict[str, Any]:
    """Per-cell milliseconds of ``off`` and ``on``, interleaved; and what ``on`` flagged."""
    from edgeleuk.runtime.classifier import Classifier

    clfs = {"off": Classifier.load(models["off"], "openvino", precision=precision, threads=threads,
                                   batch_size=1, qc=False),
            "on": Classifier.load(models["on"], "openvino", precision=precision, threads=threads,
                                  batch_size=1, qc=True)}
    assert clfs["off"].trust.fetch == () and clfs["on"].trust.fetch == ("embedding",), "variants not as described"
    for i in range(warmup):
        for clf in clfs.values():
            clf.predict_arrays(cells[i % len(cells)])
    times: dict[str, list[float]] = {"off": [], "on": []}
    flagged = 0
    for r in range(rounds):
        for i, cell in enumerate(cells):
            order = ("off", "on") if (r + i) % 2 == 0 else ("on", "off")
            for name in order:
                start = time.perf_counter()
                pred = clfs[name].predict_arrays(cell)[0]
                times[name].append(1000 * (time.perf_counter() - start))
                if name == "on" and r == 0:
                    flagged += pred.flagged
    diff = np.asarray(times["on"]) - np.asarray(times["off"])
    off, on = _stats(times["off"]), _stats(times["on"])
    return {"off": off, "on": on, "ratio_p50": on["p50"] / off["p50"], "ratio_mean": on["mean"] / off["mean"],
            "paired_diff_ms": {"p50": float(np.median(diff)), "mean": float(diff.mean())},
            "added_share": float(np.median(diff)) / off["p50"], "on_flagged": flagged,
            "checks_ms": _checks_ms(clfs["on"], cells, embeddings, rounds),
            "engine": {k: dataclasses.asdict(c.info) for k, c in clfs.items()}}


def to_markdown(record: dict[str, Any]) -> str:
    """The record as a Markdown page."""
    s, m = record["settings"], record["timing"]
    lines = [
        "# QC + OOD next to the INT8 exact row (SYNTHETIC)", "",
        f"Command: `python benchmarks/trust_cost.py --n {s['n']} --rounds {s['rounds']} --warmup {s['warmup']} "
        f"--threads {s['threads']} --precision {s['precision']}`. One run, both variants in the same process,",
        f"interleaved. Model: `{s['arch']}` INT8 IR (`{Path(s['ir']).name}`, the standard bench's), "
        f"OpenVINO, float layers {s['precision']}, full 8-rotation TTA, batch 1, {s['threads']} threads.",
        "SYNTHETIC cells (`edgeleuk synth`'s drawing); speed does not depend on what the cells show.", "",
        "| variant | p50 ms | p90 ms | p99 ms | mean ms | calls |", "|---|---|---|---|---|---|",
    ]
    for key, label in (("off", "INT8 exact row: `qc=False`, no OOD model"),
                       ("on", "same IR + QC (fitted ranges) + OOD (embedding fetched, scored)")):
        t = m[key]
        lines.append(f"| {label} | {t['p50']:.1f} | {t['p90']:.1f} | {t['p99']:.1f} | {t['mean']:.1f} | {t['n']} |")
    t = record["trust"]
    lines += [
        "",
        f"- ratio of the medians (on / off): **{m['ratio_p50']:.4f}**; of the means: {m['ratio_mean']:.4f}",
        f"- median paired difference (same cell, same round): **{m['paired_diff_ms']['p50']:.2f} ms** "
        f"= **{m['added_share']:.2%}** of the row's p50 (budget {BUDGET:.0%}: "
        f"{'met' if m['added_share'] <= BUDGET else 'NOT met'})",
        f"- the checks alone, in the same run (`trust.reasons` + `quality.ood_scores` of one cell, as the "
        f"`on` classifier calls them): p50 **{m['checks_ms']['p50']:.2f} ms** (p99 {m['checks_ms']['p99']:.2f}) "
        f"= **{m['checks_ms']['p50'] / m['off']['p50']:.2%}** of the row's p50",
        f"- OOD model: {t['ood_k']} components of {t['ood_dim']} dims ({t['ood_json_chars']} characters of "
        f"metadata), fitted with the quality ranges on {t['fit_cells']} drawn training cells; "
        f"{m['on_flagged']} of the {s['n']} timed cells flagged",
        "", "## Machine", "",
    ]
    machine = record["machine"]
    lines += [f"- {k}: {v}" for k, v in machine.items() if k in ("cpu", "usable_cores", "logical_cores", "platform")]
    lines += [f"- load average (1, 5, 15 min) before: {record['load_before']}, after: {record['load_after']} "
              "(other processes shared the cores: the wall clock's spread is mostly waiting for a core)",
              f"- engine: {m['engine']['on'].get('name')} {m['engine']['on'].get('precision')}",
              f"- wall time of the whole run: {record['seconds']:.0f} s", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Export or reuse the IR, fit the trust metadata, time both variants, write TRUST_COST.md/.json."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgeleuk" / "bench-standard"
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=cache, help="the standard bench's cache folder")
    ap.add_argument("--arch", default=StandardConfig.arch, help="seresnext_tiny only to smoke-test this script")
    ap.add_argument("--n", type=int, default=16, help="cells timed per round")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--fit", type=int, default=100, help="drawn cells the ranges and the OOD model are fitted on")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", default="bf16", choices=("bf16", "f32"), help="OpenVINO's float layers")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=HERE / "TRUST_COST.md")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from edgeleuk.bench.machine import collect_machine
    from edgeleuk.synth.shifts import normal_cells

    started, load_before = time.perf_counter(), os.getloadavg()
    cfg = StandardConfig(work=args.work, out=HERE / "RESULTS.md", arch=args.arch)
    ir = int8_ir(cfg)
    on_ir, trust, embeddings = with_trust(ir, args.work / f"{args.arch}-int8-trust.xml", args.fit, args.seed,
                              args.precision, args.threads)
    cells = np.stack(list(normal_cells(args.n, args.seed + 1)))
    timing = measure({"off": ir, "on": on_ir}, cells, args.rounds, args.warmup, args.precision, args.threads,
                     embeddings)
    record = {"synthetic": True, "settings": {**vars(args), "work": str(args.work), "out": str(args.out),
                                              "ir": str(ir)},
              "trust": trust, "timing": timing, "machine": dataclasses.asdict(collect_machine(args.threads)),
              "load_before": [round(v, 2) for v in load_before],
              "load_after": [round(v, 2) for v in os.getloadavg()], "seconds": time.perf_counter() - started}
    text = to_markdown(record)
    args.out.write_text(text, encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n",
                                             encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
