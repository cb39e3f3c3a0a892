"""Classification metrics from scikit-learn on per-slide prediction records."""

import warnings
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score, roc_auc_score


def classification_metrics(records: list[dict[str, Any]], classes: list[str]) -> dict[str, Any]:
    """Balanced accuracy, accuracy, macro F1, macro one-vs-rest AUC and the confusion matrix.

    ``records`` hold ``target``, ``pred`` and ``prob_<class>`` per slide. AUC is NaN when
    the split holds fewer than two classes (undefined), never an exception.
    """
    y_true = [str(r["target"]) for r in records]
    y_pred = [str(r["pred"]) for r in records]
    probs = np.array([[r[f"prob_{c}"] for c in classes] for r in records], dtype=float)
    out: dict[str, Any] = {
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)) if records else float("nan"),
        "accuracy": float(accuracy_score(y_true, y_pred)) if records else float("nan"),
        "f1_macro": float(f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=classes).tolist() if records else [],
        "classes": classes,
    }
    present = sorted(set(y_true))
    auc = float("nan")
    if len(present) >= 2 and set(present) <= set(classes):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cols = [classes.index(c) for c in present]
            p = probs[:, cols] / probs[:, cols].sum(1, keepdims=True).clip(1e-12)  # renormalised over present
            if len(present) == 2:  # two classes in this split (of two or more): one binary AUC
                auc = float(roc_auc_score([c == present[1] for c in y_true], p[:, 1]))
            else:
                auc = float(roc_auc_score(y_true, p, labels=present, multi_class="ovr", average="macro"))
    out["auc_macro"] = auc
    return out
