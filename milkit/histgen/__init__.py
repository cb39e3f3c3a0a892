"""HistGen (Guo et al., MICCAI 2024): report generation from whole-slide features."""
