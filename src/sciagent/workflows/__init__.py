"""Workflows: recipes that plan, simulate, evaluate, adapt and report."""
