"""The tensor phase of a compiled spec on one batch, run eagerly and through
``torch.compile(fullgraph=True)``: a graph break or a host sync fails the compile."""

from __future__ import annotations

import torch

from kdsl.runtime import execute


def eager_and_fullgraph(module, completions: list, columns: dict) -> tuple[dict, dict]:
    ref = torch.zeros(len(completions))
    interner = execute.col.Interner(module.STRINGS)
    env = execute.prepare_columns(module, columns, len(completions), ref, interner)
    module.extract(completions, env, execute.Extraction(completions, ref, interner))
    eager = module.evaluate(**env)
    compiled = torch.compile(module.evaluate, fullgraph=True, backend="eager")(**env)
    return eager, compiled
