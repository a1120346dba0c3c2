"""Instance metrics: predicted objects matched to ground-truth objects, StarDist's rule.

``stardist.matching.matching`` (Schmidt et al. 2018; Weigert et al. 2020) is the
reference: a predicted and a true object match when their IoU is at least the
threshold, one to one, the assignment maximising first the number of matches and
then their summed IoU (``scipy.optimize.linear_sum_assignment``). Then

    precision = TP / (TP + FP)       recall = TP / (TP + FN)
    f1 = 2 TP / (2 TP + FP + FN)     ap = TP / (TP + FP + FN)   (the DSB 2018 "average precision")
    mean_matched_iou = sum of matched IoUs / TP
    panoptic_quality = sum of matched IoUs / (TP + FP / 2 + FN / 2)   (Kirillov et al. 2019)

each 0 when TP is 0, as StarDist reports them. ``ap50_95`` averages ``ap`` over the
IoU thresholds 0.5, 0.55, ..., 0.95 (the COCO range).

Unlike StarDist, the IoU matrix is never dense: overlaps are counted from the pixels
where both images have an object, and the assignment is solved for each group of
objects that share candidate pairs (at IoU >= 0.5 almost every group is one pair),
so memory grows with the number of objects, not with its square. The counts and
scores are StarDist's (``tests/test_objects.py`` compares them with its code).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

THRESHOLDS = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))  # 0.5 .. 0.95
# per-image fields of the report, in column order (all at IoU 0.5 but ap50_95)
INSTANCE_FIELDS = (
    "n_true_objects",
    "n_pred_objects",
    "precision",
    "recall",
    "f1",
    "ap50",
    "ap50_95",
    "mean_matched_iou",
    "panoptic_quality",
)


@dataclass(frozen=True)
class Matching:
    """The result of matching at one IoU threshold."""

    thresh: float
    tp: int
    fp: int
    fn: int
    n_true: int
    n_pred: int
    precision: float
    recall: float
    f1: float
    ap: float  # TP / (TP + FP + FN)
    mean_matched_iou: float
    panoptic_quality: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Overlaps:
    """The object pairs that overlap: true index, predicted index, IoU (sparse)."""

    true_idx: np.ndarray  # (K,) 0-based index of the true object
    pred_idx: np.ndarray  # (K,) 0-based index of the predicted object
    iou: np.ndarray  # (K,) float64
    n_true: int
    n_pred: int


def is_instance_labels(labels: np.ndarray) -> bool:
    """True for an integer image with more than two values (0/1 or 0/255 masks are binary)."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu" or labels.size == 0:
        return False
    lo, hi = labels.min(), labels.max()
    return bool(np.any((labels != lo) & (labels != hi)))


def _objects(labels: np.ndarray, per_page: bool) -> tuple[np.ndarray, int]:
    """(ids, n): each pixel's object as 1..n (0 = background); pages apart when ``per_page``."""
    labels = np.asarray(labels)
    if labels.ndim == 3 and per_page and labels.shape[0] > 1:
        page = np.arange(labels.shape[0], dtype=np.int64).reshape(-1, 1, 1)
        key = np.where(labels > 0, page * (int(labels.max()) + 1) + labels, 0)
    else:
        key = labels.astype(np.int64, copy=False)
    values, ids = np.unique(key, return_inverse=True)
    ids = ids.reshape(key.shape)
    if values[0] != 0:  # no background pixel: ids start at 1 already
        return ids + 1, len(values)
    return ids, len(values) - 1


def overlaps(true_labels: np.ndarray, pred_labels: np.ndarray, per_page: bool = True) -> Overlaps:
    """The overlapping (true, predicted) object pairs and their IoU.

    Label images of one shape, (H, W) or (P, H, W); with ``per_page`` each page's
    labels are objects of their own (label 3 on page 0 and on page 1 differ).
    """
    if np.shape(true_labels) != np.shape(pred_labels):
        raise ValueError(
            f"shape mismatch: ground truth {np.shape(true_labels)} vs labels {np.shape(pred_labels)}"
        )
    t, n_true = _objects(true_labels, per_page)
    p, n_pred = _objects(pred_labels, per_page)
    t, p = t.ravel(), p.ravel()
    area_t = np.bincount(t, minlength=n_true + 1)
    area_p = np.bincount(p, minlength=n_pred + 1)
    both = (t > 0) & (p > 0)
    pairs, inter = np.unique(t[both] * (n_pred + 1) + p[both], return_counts=True)
    ti, pi = np.divmod(pairs, n_pred + 1)
    iou = inter / (area_t[ti] + area_p[pi] - inter)
    return Overlaps(ti - 1, pi - 1, iou.astype(np.float64), n_true, n_pred)


def match(ov: Overlaps, thresh: float = 0.5) -> Matching:
    """Match at one IoU threshold (StarDist's ``matching`` with ``criterion="iou"``)."""
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    keep = ov.iou >= thresh
    ti, pi, s = ov.true_idx[keep], ov.pred_idx[keep], ov.iou[keep]
    matched = np.zeros(len(s), dtype=bool)
    t_count = np.bincount(ti, minlength=ov.n_true)
    p_count = np.bincount(pi, minlength=ov.n_pred)
    single = (t_count[ti] == 1) & (p_count[pi] == 1)  # a candidate pair no other pair touches
    matched[single] = True
    rest = np.flatnonzero(~single)
    if rest.size:  # objects with several candidates: solve each connected group
        n = ov.n_true + ov.n_pred
        graph = coo_matrix((np.ones(rest.size), (ti[rest], ov.n_true + pi[rest])), shape=(n, n))
        _, group = connected_components(graph, directed=False)
        n_matched = max(1, min(ov.n_true, ov.n_pred))
        edge_group = group[ti[rest]]
        for g in np.unique(edge_group):
            e = rest[edge_group == g]
            rows, r_inv = np.unique(ti[e], return_inverse=True)
            cols, c_inv = np.unique(pi[e], return_inverse=True)
            score = np.zeros((len(rows), len(cols)))
            score[r_inv, c_inv] = s[e]
            cost = -(score >= thresh).astype(float) - score / (2 * n_matched)  # StarDist's cost
            r_sel, c_sel = linear_sum_assignment(cost)
            ok = score[r_sel, c_sel] >= thresh
            chosen = set(zip(rows[r_sel[ok]].tolist(), cols[c_sel[ok]].tolist(), strict=True))
            matched[e] = [pair in chosen for pair in zip(ti[e].tolist(), pi[e].tolist(), strict=True)]
    tp = int(matched.sum())
    fp, fn = ov.n_pred - tp, ov.n_true - tp
    total = float(s[matched].sum())

    def ratio(num: float, den: float) -> float:
        return num / den if tp > 0 else 0.0

    return Matching(
        thresh=float(thresh),
        tp=tp,
        fp=fp,
        fn=fn,
        n_true=ov.n_true,
        n_pred=ov.n_pred,
        precision=ratio(tp, tp + fp),
        recall=ratio(tp, tp + fn),
        f1=ratio(2 * tp, 2 * tp + fp + fn),
        ap=ratio(tp, tp + fp + fn),
        mean_matched_iou=ratio(total, tp),
        panoptic_quality=ratio(total, tp + fp / 2 + fn / 2),
    )


def instance_metrics(true_labels: np.ndarray, pred_labels: np.ndarray, per_page: bool = True) -> dict:
    """The report's per-image instance metrics (``INSTANCE_FIELDS``): at IoU 0.5, and ``ap50_95``."""
    ov = overlaps(true_labels, pred_labels, per_page)
    at50 = match(ov, 0.5)
    ap = [at50.ap] + [match(ov, t).ap for t in THRESHOLDS[1:]]
    return {
        "n_true_objects": ov.n_true,
        "n_pred_objects": ov.n_pred,
        "precision": at50.precision,
        "recall": at50.recall,
        "f1": at50.f1,
        "ap50": at50.ap,
        "ap50_95": float(np.mean(ap)),
        "mean_matched_iou": at50.mean_matched_iou,
        "panoptic_quality": at50.panoptic_quality,
    }
