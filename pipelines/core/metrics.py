"""Model quality numbers, pure functions of labels and scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn import metrics as skm


def threshold_at_alert_rate(scores: np.ndarray, alert_rate: float) -> float:
    """The score above which `alert_rate` of transactions would be flagged."""
    return float(np.quantile(scores, 1.0 - alert_rate)) if len(scores) else 1.0


def summary(y: np.ndarray, p: np.ndarray, alert_rate: float, bins: int = 10) -> dict[str, float]:
    """Test metrics of scores `p` (n) against 0/1 labels `y` (n).

    ROC-AUC, average precision, recall and precision at the `alert_rate` threshold (the share
    a team can review), log loss, Brier score and expected calibration error over `bins` quantile
    bins. With one class only `rows` and `positives` (ranking metrics are undefined).
    """
    y = np.asarray(y, dtype=int)
    p = np.clip(np.asarray(p, dtype=float), 1e-7, 1 - 1e-7)
    out: dict[str, float] = {"rows": int(len(y)), "positives": int(y.sum())}
    if len(np.unique(y)) < 2:
        return out  # ranking metrics are undefined on one class; say so by omission
    thr = threshold_at_alert_rate(p, alert_rate)
    flagged = p >= thr
    out.update(
        roc_auc=float(skm.roc_auc_score(y, p)),
        average_precision=float(skm.average_precision_score(y, p)),
        recall_at_alert_rate=float(flagged[y == 1].mean()),
        precision_at_alert_rate=float(y[flagged].mean()) if flagged.any() else 0.0,
        log_loss=float(skm.log_loss(y, p)),
        brier=float(skm.brier_score_loss(y, p)),
        expected_calibration_error=expected_calibration_error(y, p, bins),
    )
    return out


def calibration_table(y: np.ndarray, p: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Quantile bins of predicted probability against the observed rate."""
    df = pd.DataFrame({"y": np.asarray(y, dtype=float), "p": np.asarray(p, dtype=float)})
    df["bin"] = pd.qcut(df["p"].rank(method="first"), q=min(bins, len(df)), labels=False)
    t = df.groupby("bin").agg(predicted=("p", "mean"), observed=("y", "mean"), rows=("y", "size"))
    return t.reset_index(drop=True)


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Row-weighted mean |predicted - observed| over quantile bins (Naeini et al., 2015)."""
    t = calibration_table(y, p, bins)
    return float((t["rows"] * (t["predicted"] - t["observed"]).abs()).sum() / t["rows"].sum())


def curves(y: np.ndarray, p: np.ndarray, points: int = 200) -> tuple[pd.DataFrame, pd.DataFrame]:
    """ROC and precision-recall curves, thinned to about `points` rows for plotting."""
    fpr, tpr, _ = skm.roc_curve(y, p)
    prec, rec, _ = skm.precision_recall_curve(y, p)
    roc = pd.DataFrame({"fpr": fpr, "tpr": tpr})
    pr = pd.DataFrame({"recall": rec, "precision": prec})
    return _thin(roc, points), _thin(pr, points)


def _thin(df: pd.DataFrame, points: int) -> pd.DataFrame:
    if len(df) <= points:
        return df.reset_index(drop=True)
    idx = np.unique(np.linspace(0, len(df) - 1, points).round().astype(int))
    return df.iloc[idx].reset_index(drop=True)


def slices(
    frame: pd.DataFrame, y: str, p: str, by: list[str], alert_rate: float, min_rows: int
) -> dict:
    """Per-value metrics for each slicing column; values with too few rows are pooled as '(other)'."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    thr = threshold_at_alert_rate(frame[p].to_numpy(), alert_rate)
    for col in by:
        counts = frame[col].value_counts()
        keys = frame[col].where(frame[col].map(counts) >= min_rows, "(other)").astype(str)
        per: dict[str, dict[str, float]] = {}
        for value, part in frame.groupby(keys, sort=True):
            yy, pp = part[y].to_numpy(dtype=int), part[p].to_numpy()
            m: dict[str, float] = {"rows": int(len(part)), "fraud_rate": float(yy.mean())}
            if len(np.unique(yy)) == 2:
                m["roc_auc"] = float(skm.roc_auc_score(yy, pp))
                # Recall at the global threshold: does the alert budget reach this slice's fraud?
                m["recall_at_alert_rate"] = float((pp[yy == 1] >= thr).mean())
            per[str(value)] = m
        out[col] = per
    return out
