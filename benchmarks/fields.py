"""Smear fields on SYNTHETIC data: detection F1, exclusions, scale, the cut's round trip, speed.

    python benchmarks/fields.py                          # 100 fields, detection and speed only
    python benchmarks/fields.py --model model.onnx --int8 model-int8.xml --model-um-per-px 0.055

Every field is drawn by :func:`edgeleuk.synth.fields.draw_field` (2048 x 1536 at 0.08 um per
pixel unless told otherwise) with its ground truth, and searched by
:func:`edgeleuk.fields.find_cells` with the scale *estimated* from the red cells (no flag):

* **detection**: a found cell matches a drawn white cell (not cut by the edge) at IoU >= 0.5, one
  to one; F1 over all fields; touching pairs' members separately; a found cell lying mostly on a
  red cell, platelet or debris counts as "a red cell or platelet classified" for its field;
* **scale**: the estimate against the drawn scale;
* **round trip** (``--model``): each drawn cell's original C-NMC crop and the crop cut back out of
  the field, both classified: same label, |dprob|;
* **speed**: segmentation time per field (p50/p90, OpenCV on ``--threads`` threads) and, with
  ``--int8``, fields per second end to end (PNG decode, find_cells, classify the crops).

Figures are SYNTHETIC: drawn pictures, not blood; they say nothing about leukaemia diagnosis.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from edgeleuk.fields import decode_field, find_cells
from edgeleuk.synth.fields import FIELD_SIZE, FIELD_UM_PER_PX, draw_field


def _mask(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape, np.uint8)
    cv2.fillPoly(out, [points.reshape(-1, 1, 2)], 1)
    return out.astype(bool)


def score_field(result, ids: np.ndarray, objects: list[dict]) -> dict:
    """Matches of one field's found cells against its drawn ones (IoU >= 0.5, greedy by IoU)."""
    truth = [o for o in objects if o["kind"] == "white_cell" and not o["edge_cut"]]
    found = [o for o in result.outlines if o.kind == "white_cell"]
    pairs = []
    for fi, o in enumerate(found):
        m = _mask(o.points, ids.shape)
        hit = ids[m]
        for ti, t in enumerate(truth):
            tm = ids == t["id"]
            inter = int((hit == t["id"]).sum())
            if inter:
                pairs.append((inter / float(m.sum() + tm.sum() - inter), fi, ti))
    matched_f, matched_t, match = set(), set(), {}
    for iou, fi, ti in sorted(pairs, reverse=True):
        if iou >= 0.5 and fi not in matched_f and ti not in matched_t:
            matched_f.add(fi)
            matched_t.add(ti)
            match[found[fi].index] = truth[ti]["id"]
    kinds = {o["id"]: o["kind"] for o in objects}
    wrong = 0
    for fi, o in enumerate(found):
        if fi in matched_f:
            continue
        hit = ids[_mask(o.points, ids.shape)]
        labels, counts = np.unique(hit[hit > 0], return_counts=True)
        if len(labels) and kinds[int(labels[np.argmax(counts)])] in ("red_cell", "platelet", "debris"):
            wrong += 1
    in_pair = [ti for ti, t in enumerate(truth) if t.get("pair")]
    return {"tp": len(matched_t), "fp": len(found) - len(matched_f), "fn": len(truth) - len(matched_t),
            "pair_members": len(in_pair), "pair_found": len(set(in_pair) & matched_t),
            "non_white_classified": wrong, "match": match}


def _classify(clf, images: list[np.ndarray]) -> list:
    return clf.predict_arrays(np.stack(images)) if images else []


def main(argv: list[str] | None = None) -> int:
    """Draw, search and score the fields; print (and with --json write) the figures."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fields", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--um-per-px", type=float, default=FIELD_UM_PER_PX)
    ap.add_argument("--model", type=Path, help="fp32 ONNX for the round trip")
    ap.add_argument("--int8", type=Path, help="INT8 IR for fields/s end to end")
    ap.add_argument("--model-um-per-px", type=float, help="default: the model's metadata, else 0.055")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--timing-only", action="store_true", help="only the one-field timing (and --int8)")
    args = ap.parse_args(argv)
    cv2.setNumThreads(args.threads)
    clf = None
    if args.model:
        from edgeleuk import Classifier

        clf = Classifier.load(args.model, backend="auto", threads=args.threads)
    model_um = args.model_um_per_px or (clf and clf.meta.um_per_px) or 0.055
    if args.timing_only:
        out = {"synthetic": True, **_timing(args, model_um), **(_end_to_end(args, model_um) if args.int8 else {})}
        print(json.dumps(out, indent=1))
        return 0
    tot = {"tp": 0, "fp": 0, "fn": 0, "pair_members": 0, "pair_found": 0}
    bad_fields, seg, scale_err, same, dprob = 0, [], [], [], []
    for i in range(1, args.fields + 1):
        rgb, ids, objects, crops = draw_field(np.random.default_rng([args.seed, 7, i]), size=FIELD_SIZE,
                                              um_per_px=args.um_per_px)
        res = find_cells(rgb, um_per_px=None, model_um_per_px=model_um)
        seg.append(res.seconds)
        scale_err.append(res.um_per_px / args.um_per_px - 1)
        s = score_field(res, ids, objects)
        for k in tot:
            tot[k] += s[k]
        bad_fields += s["non_white_classified"] > 0
        if clf is not None and s["match"]:
            cut = {c.index: c.image for c in res.cells}
            keys = list(s["match"].items())
            orig = _classify(clf, [crops[t] for _, t in keys])
            back = _classify(clf, [cut[f] for f, _ in keys])
            for a, b in zip(orig, back, strict=True):
                same.append(a.label == b.label)
                dprob.append(abs(a.prob_all - b.prob_all))
    f1 = 2 * tot["tp"] / max(1, 2 * tot["tp"] + tot["fp"] + tot["fn"])
    out = {
        "synthetic": True, "fields": args.fields, "size": list(FIELD_SIZE), "um_per_px": args.um_per_px,
        "model_um_per_px": model_um, "threads": args.threads, **tot,
        "precision": tot["tp"] / max(1, tot["tp"] + tot["fp"]), "recall": tot["tp"] / max(1, tot["tp"] + tot["fn"]),
        "f1": f1, "fields_with_red_cell_or_platelet_classified": bad_fields,
        "share_fields_clean": 1 - bad_fields / args.fields,
        "scale_error_abs_median": float(np.median(np.abs(scale_err))),
        "scale_error_abs_max": float(np.max(np.abs(scale_err))),
        "segmentation_s_p50": float(np.percentile(seg, 50)), "segmentation_s_p90": float(np.percentile(seg, 90)),
    }
    if same:
        out.update(round_trip_cells=len(same), round_trip_same_label=float(np.mean(same)),
                   round_trip_dprob_median=float(np.median(dprob)),
                   round_trip_dprob_p90=float(np.percentile(dprob, 90)), round_trip_model=str(args.model))
    out.update(_timing(args, model_um))
    if args.int8:
        out.update(_end_to_end(args, model_um))
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


def _timing(args, model_um: float, repeats: int = 20) -> dict:
    """One 2048x1536 field searched ``repeats`` times: wall and CPU seconds, and the machine's load.

    CPU seconds (the process's, all threads) are what the segmentation costs whatever else runs; the
    wall time on a shared machine also holds the waits for a core (the load average says how busy it was).
    """
    rgb, *_ = draw_field(np.random.default_rng([args.seed, 9, 1]), size=FIELD_SIZE, um_per_px=args.um_per_px)
    find_cells(rgb, um_per_px=None, model_um_per_px=model_um)  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        find_cells(rgb, um_per_px=None, model_um_per_px=model_um)
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return {"timing_field": f"{FIELD_SIZE[0]}x{FIELD_SIZE[1]}", "timing_wall_s_p50": float(np.median(wall)),
            "timing_wall_s_p90": float(np.percentile(wall, 90)), "timing_cpu_s_p50": float(np.median(cpu)),
            "timing_wall_s_min": float(np.min(wall)), "load_average_1min": os.getloadavg()[0],
            "cpu_cores": os.cpu_count()}


def _end_to_end(args, model_um: float) -> dict:
    """Fields per second: PNG bytes -> decode -> find_cells -> classify every crop with the INT8 model."""
    from edgeleuk import Classifier

    clf = Classifier.load(args.int8, backend="auto", threads=args.threads)
    pngs = []
    for i in range(1, 9):
        rgb, *_ = draw_field(np.random.default_rng([args.seed, 8, i]), size=FIELD_SIZE, um_per_px=args.um_per_px)
        pngs.append(cv2.imencode(".png", rgb[:, :, ::-1])[1].tobytes())
    cells, start = 0, time.perf_counter()
    for data in pngs:
        res = find_cells(decode_field(data).rgb, um_per_px=None, model_um_per_px=model_um)
        cells += len(_classify(clf, [c.image for c in res.cells]))
    secs = time.perf_counter() - start
    return {"e2e_model": str(args.int8), "e2e_fields": len(pngs), "e2e_cells_per_field": cells / len(pngs),
            "e2e_fields_per_s": len(pngs) / secs}


if __name__ == "__main__":
    sys.exit(main())
