"""Shared neural-network building blocks (masking, attention pooling)."""
