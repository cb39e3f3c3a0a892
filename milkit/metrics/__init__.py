"""Task metrics, computed with scikit-learn / scikit-survival / pycocoevalcap."""
