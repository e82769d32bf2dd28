"""kdsl: a reward and constraint language with a compiler for reinforcement fine-tuning.

``kdsl.load(path)`` / ``kdsl.loads(text)`` parse, check and compile a spec into a ``Program``;
``Program.score(completions, **columns)`` returns ``Scores``. Torch is imported only when a
program is built, so ``kdsl check`` stays light.
"""

from __future__ import annotations

from kdsl.errors import KdslError

__version__ = "0.1.0"
__all__ = ["KdslError", "Program", "Scores", "__version__", "load", "loads"]


def load(path, *, similarity_model=None, spec_path=(), models=None, judge_cache=None):
    """Parse, check and compile a ``.kd`` file into a ``Program``. ``similarity_model`` (a
    sentence-transformers path or hub id, or a loaded model) backs ``similarity()``;
    ``spec_path`` adds folders that imports may come from (see docs/security.md); ``models``
    binds the spec's judges and reward models by name, ``judge_cache`` keeps their answers in a
    file (see docs/language.md, "Judged values")."""
    from kdsl.runtime.program import load as _load

    return _load(path, similarity_model=similarity_model, spec_path=spec_path, models=models,
                 judge_cache=judge_cache)


def loads(text: str, name: str = "<string>", *, similarity_model=None, spec_path=(), models=None,
          judge_cache=None):
    """Parse, check and compile spec text into a ``Program``."""
    from kdsl.runtime.program import loads as _loads

    return _loads(text, name, similarity_model=similarity_model, spec_path=spec_path,
                  models=models, judge_cache=judge_cache)


def __getattr__(name: str):
    if name in ("Program", "Scores"):
        from kdsl.runtime import program

        return getattr(program, name)
    raise AttributeError(f"module 'kdsl' has no attribute {name!r}")
