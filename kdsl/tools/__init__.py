"""What a user runs on a spec: test, mutate, explain, describe, score, eval, ablate, report."""
