"""Experiment configs (ml_collections): base.py declares every field."""
