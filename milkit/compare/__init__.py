"""``milkit compare``: several aggregators, one cohort, the same folds, seeds and head; one table."""
