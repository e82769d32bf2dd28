"""Stage 4: a compiled, loaded program. ``kdsl.load`` / ``kdsl.loads`` return a ``Program``.

The program runs the generated module itself (loaded through the import system from its source,
registered with ``linecache`` so tracebacks show generated lines), so what ``kdsl compile``
writes is exactly what scores.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.util
import linecache
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kdsl.codegen import generate, quote
from kdsl.compiler import compile_ir, read_spec_file
from kdsl.errors import Diagnostic, KdslError, Span
from kdsl.ir import ProgramIR, dump


@dataclass
class Scores:
    """What a program says about a batch of completions (all tensors have batch size B).

    - ``reward``: float32 (B,), the weighted sum of level scores after gating.
    - ``rules[name]``: truth in [0, 1]; ``applies[name]``: bool, whether the rule counted.
    - ``levels[name]``: a level's score after gating (what it adds to the reward, before its weight).
    - ``values[name]``: each scalar ``let``; ``valid[name]``: whether it could be computed.
    - ``spans[output]``: for outputs that rules act ``on``, each completion's character span
      ``(start, end)`` of that output, or ``None`` where it was not found.
    """

    reward: torch.Tensor
    rules: dict[str, torch.Tensor] = field(default_factory=dict)
    applies: dict[str, torch.Tensor] = field(default_factory=dict)
    levels: dict[str, torch.Tensor] = field(default_factory=dict)
    values: dict[str, torch.Tensor] = field(default_factory=dict)
    valid: dict[str, torch.Tensor] = field(default_factory=dict)
    spans: dict[str, list] = field(default_factory=dict)

    @classmethod
    def from_outputs(cls, out: dict[str, torch.Tensor]) -> Scores:
        scores = cls(reward=out["reward"].to(torch.float32))
        for key, value in out.items():
            kind, _, name = key.partition(".")
            target = {"rule": scores.rules, "applies": scores.applies, "level": scores.levels,
                      "let": scores.values, "valid": scores.valid}.get(kind)
            if target is not None:
                target[name] = value
        return scores


class _SourceLoader(importlib.abc.SourceLoader):
    def __init__(self, source: str, filename: str):
        self.source = source
        self.filename = filename

    def get_filename(self, fullname: str) -> str:
        return self.filename

    def get_data(self, path: str) -> bytes:
        return self.source.encode("utf-8")


def load_module(source: str, name: str):
    """Import generated module source under a unique name, without writing it to disk."""
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()[:12]
    filename = f"<kdsl {quote(name)} {digest}>"  # tracebacks show it; compile() refuses a NUL
    module_name = f"kdsl_generated_{digest}"
    loader = _SourceLoader(source, filename)
    spec = importlib.util.spec_from_loader(module_name, loader, origin=filename)
    module = importlib.util.module_from_spec(spec)
    import sys

    sys.modules[module_name] = module
    loader.exec_module(module)
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    return module


class Program:
    """A checked and compiled spec.

    >>> program = loads('''
    ... spec demo version 1
    ... output {
    ...   answer: tag "answer"
    ... }
    ... level format gate {
    ...   rule has_answer: present(answer)
    ... }
    ... ''')
    >>> program.score(["<answer>4</answer>", "four"]).reward.tolist()
    [1.0, 0.0]
    """

    def __init__(self, ir: ProgramIR, warnings: Sequence[Diagnostic] = ()):
        self.ir = ir
        self.warnings = list(warnings)
        self.source = generate(ir)
        self.module = load_module(self.source, Path(ir.file).name)
        self._evaluate = None  # a torch.compile'd tensor phase, once compile() is called
        # What backs similarity(): a sentence-transformers path or hub id, or a loaded model.
        self.similarity_model = None
        # The models the spec calls (`judge` and `reward_model`), their answers and counts.
        from kdsl.runtime.judging import Judging, cache_from_environment

        self.judging = Judging(cache=cache_from_environment())

    @property
    def models(self) -> dict:
        """What each model the spec calls is bound to (name -> path, URL, callable, ...)."""
        return self.judging.models

    def bind(self, **models) -> Program:
        """Bind the spec's judges and reward models by name (see ``kdsl.runtime.judging``)."""
        unknown = sorted(set(models) - set(self.ir.models))
        if unknown:
            from kdsl.errors import did_you_mean

            known = ", ".join(self.ir.models) or "none"
            raise KdslError(f"{self.ir.name} calls no model `{unknown[0]}`"
                            f"{did_you_mean(unknown[0], self.ir.models)}; it calls: {known}")
        self.judging.models.update(models)
        self.judging._backends.clear()
        return self

    @property
    def judge_stats(self):
        """What the models were asked, answered from the cache, skipped and failed so far
        (``kdsl.runtime.judging.JudgeStats``)."""
        return self.judging.stats

    @property
    def name(self) -> str:
        return self.ir.name

    @property
    def rule_names(self) -> list[str]:
        return [r.name for r in self.ir.rules]

    @property
    def level_names(self) -> list[str]:
        return [lv.name for lv in self.ir.levels]

    @property
    def input_names(self) -> list[str]:
        return list(self.ir.inputs)

    def emit_ir(self) -> str:
        return dump(self.ir)

    def compile(self, **options) -> Program:
        """Run the tensor phase through ``torch.compile(fullgraph=True)`` from now on.

        Fusing the whole phase into a few kernels matters for per-pixel rules, which are bound by
        memory traffic; the first batch pays the compilation (seconds to a minute). ``options``
        go to ``torch.compile`` (for example ``dynamic=True``, ``mode="max-autotune"``).
        """
        self._evaluate = torch.compile(self.module.evaluate, fullgraph=True, **options)
        return self

    def outputs(self, completions: Sequence, *, device=None, dtype=torch.float32, tokenizer=None,
                invalid=None, **columns) -> dict[str, torch.Tensor]:
        """The raw output dict of the generated module's ``evaluate``."""
        from kdsl.runtime import execute

        return execute.run(self.module, completions, columns, device=device, dtype=dtype,
                           tokenizer=tokenizer, evaluate=self._evaluate,
                           similarity_model=self.similarity_model, invalid=invalid,
                           judging=self.judging)

    def score(self, completions: Sequence, *, device=None, dtype=torch.float32, tokenizer=None,
              invalid=None, **columns) -> Scores:
        """Score a batch: completions (strings or chat messages) and one column per input.
        ``invalid`` (a ``kdsl.runtime.columns.InvalidValues``) counts the missing and non-finite
        column values, which score as invalid."""
        from kdsl.runtime import execute

        spans: dict[str, list] = {}
        out = execute.run(self.module, completions, columns, device=device, dtype=dtype,
                          tokenizer=tokenizer, evaluate=self._evaluate, spans=spans,
                          similarity_model=self.similarity_model, invalid=invalid,
                          judging=self.judging)
        scores = Scores.from_outputs(out)
        scores.spans = spans
        return scores

    # ---- training ------------------------------------------------------------------------------
    @property
    def advantage_config(self):
        """The spec's ``advantage`` settings as a :class:`kdsl.training.advantages.AdvantageConfig`."""
        from kdsl.training.advantages import AdvantageConfig

        return AdvantageConfig.from_settings(self.ir.advantage)

    @property
    def level_weights(self) -> dict[str, float]:
        return {lv.name: float(lv.weight) for lv in self.ir.levels}

    def advantages(self, scores: Scores, group_size: int, config=None) -> torch.Tensor:
        """Advantages (B,) of scored completions in groups of ``group_size`` consecutive rows
        (each prompt's completions together), with the spec's estimator unless ``config`` says."""
        from kdsl.training import advantages as adv

        return adv.advantages(adv.components(self.module, scores), group_size,
                              config or self.advantage_config)[0]

    def reward_functions(self, per: str = "level", tokenizer=None) -> list:
        """Reward functions that TRL's ``GRPOTrainer`` accepts; see :mod:`kdsl.training.rewards`."""
        from kdsl.training.rewards import reward_functions

        return reward_functions(self, per=per, tokenizer=tokenizer)

    def reward_weights(self, per: str = "level") -> list[float]:
        """The ``GRPOConfig.reward_weights`` that make TRL's weighted sum the spec's reward."""
        from kdsl.training.rewards import reward_weights

        return reward_weights(self, per=per)

    def __repr__(self) -> str:
        return (f"<kdsl.Program {self.ir.name} v{self.ir.version}: {len(self.ir.levels)} levels, "
                f"{len(self.ir.rules)} rules>")


def loads(text: str, name: str = "<string>", *, similarity_model=None,
          spec_path: Sequence[str | Path] = (), models: dict | None = None,
          judge_cache: str | Path | None = None) -> Program:
    """Parse, check and compile spec text. Errors raise ``KdslError`` with every problem found.
    ``similarity_model`` backs ``similarity()`` (a sentence-transformers path or hub id, or a
    loaded model); it can also be set later as ``program.similarity_model``. ``spec_path`` adds
    folders that imports may come from (as ``--spec-path`` and ``KDSL_PATH`` do). ``models``
    binds the spec's judges and reward models by name (``program.bind``), ``judge_cache`` is a
    file that keeps their answers across runs (``KDSL_JUDGE_CACHE``)."""
    ir, warnings = compile_ir(text, name, spec_path)
    if not ir.levels:
        raise KdslError(f"{ir.name} has no levels, so there is nothing to score; add a `level` "
                        "with rules", Span(name, 1, 1))
    program = Program(ir, warnings)
    program.similarity_model = similarity_model
    if judge_cache is not None:
        from kdsl.runtime.judging import JudgeCache

        program.judging.cache = JudgeCache(path=judge_cache)
    program.bind(**(models or {}))
    return program


def load(path: str | Path, *, similarity_model=None, spec_path: Sequence[str | Path] = (),
         models: dict | None = None, judge_cache: str | Path | None = None) -> Program:
    """Parse, check and compile a ``.kd`` file (imports resolve beside it, in ``spec_path`` and
    ``KDSL_PATH`` folders, then in the library); ``models`` and ``judge_cache`` as for ``loads``."""
    path = Path(path)
    return loads(read_spec_file(path), str(path), similarity_model=similarity_model,
                 spec_path=spec_path, models=models, judge_cache=judge_cache)
