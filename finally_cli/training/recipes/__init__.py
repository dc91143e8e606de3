"""Data recipes: reproducible builders of training/validation/test sets from local sources."""
