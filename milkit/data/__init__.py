"""Cohort tables, patient-level splits, and the store of feature bags."""
