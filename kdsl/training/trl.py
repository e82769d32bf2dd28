"""kdsl inside TRL's GRPO trainer.

Stock TRL works with ``program.reward_functions()`` (one named reward function per level, with
``reward_weights=program.reward_weights()``). :class:`KdslGRPOTrainer` is a thin subclass that also
applies what only kdsl knows, through one override, ``_generate_and_score_completions``: after TRL
has generated and scored a batch, it

1. replaces TRL's advantages with the spec's estimator (``advantage`` block), computed on the
   per-rule parts of the rewards *gathered from every process*, so a prompt's group split across
   ranks is normalised as a whole; each process keeps its own rows;
2. makes advantages token-level, (B, T), where rules act ``on`` an extractor: a token gets only the
   parts of the rules whose span covers it;
3. removes ``mask after|before "marker"`` tokens from the loss by multiplying them into TRL's extra
   loss mask (``tool_mask``), and recounts ``num_items_in_batch`` to match.

Level means and rule satisfaction rates reach TRL's logs (``kdsl/level/<name>``,
``kdsl/rule/<name>``) from the reward functions, through TRL's ``log_metric``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from trl import GRPOConfig, GRPOTrainer

from kdsl.runtime.execute import completion_texts
from kdsl.training import advantages as adv
from kdsl.training.rewards import ScoreCache, reward_functions, reward_weights


def gathered_advantages(accelerator, module, scores, group_size: int, config: adv.AdvantageConfig):
    """Advantages of this process's rows, from statistics over the rows of every process.

    Returns ``(advantages, parts)`` for the local rows and the advantages of all rows. Rows are
    gathered in process order, as TRL lays out a generation batch, so a group may span processes.
    """
    local = adv.components(module, scores)
    n_local = local.share.shape[0]
    gathered = local.with_rows(accelerator.gather(local.stacked()))
    seq, parts = adv.advantages(gathered, group_size, config)
    start = accelerator.process_index * n_local
    return seq[start:start + n_local], parts[start:start + n_local], seq


def token_span_columns(module, aligner, names, scores, texts, completion_ids, completion_mask):
    """For each rule that acts `on` an output: its column among ``names`` and the (B, T) mask of
    the tokens that overlap the output's character span in each completion."""
    from kdsl.training.tokens import char_to_byte_offsets, span_token_mask

    starts, ends = aligner.byte_offsets(completion_ids, completion_mask)
    columns = []
    for rule, target in module.RULE_SPANS.items():
        lo, hi = [], []
        for text, span in zip(texts, scores.spans[target]):
            if span is None:
                lo.append(-1)
                hi.append(-1)
            else:
                a, b = char_to_byte_offsets(text, [span[0], span[1]])
                lo.append(a)
                hi.append(b)
        span_start = torch.tensor(lo, dtype=torch.long, device=completion_ids.device)
        span_end = torch.tensor(hi, dtype=torch.long, device=completion_ids.device)
        columns.append((names.index(rule), span_token_mask(starts, ends, span_start, span_end)))
    return columns


def _text_tokenizer(processing_class):
    return getattr(processing_class, "tokenizer", None) or processing_class


class KdslGRPOTrainer(GRPOTrainer):
    """``GRPOTrainer`` rewarded by a kdsl program.

    ``program`` is a :class:`kdsl.Program` or a path to a ``.kd`` file. Every other argument is
    ``GRPOTrainer``'s; ``reward_funcs`` defaults to the program's per-level functions and
    ``args.reward_weights`` to the level weights. ``advantage`` overrides the spec's estimator.
    """

    def __init__(self, program, model, args: GRPOConfig | None = None, *, reward_funcs=None,
                 advantage: adv.AdvantageConfig | None = None, **kwargs):
        if isinstance(program, (str, Path)):
            from kdsl import load

            program = load(program)
        self.kdsl_program = program
        self.kdsl_advantage = advantage or program.advantage_config
        self._kdsl_cache = ScoreCache(program)
        if reward_funcs is None:
            reward_funcs = reward_functions(program, per="level", cache=self._kdsl_cache)
            if args is not None and args.reward_weights is None:
                args.reward_weights = reward_weights(program, per="level")
        super().__init__(model=model, reward_funcs=reward_funcs, args=args, **kwargs)
        self._kdsl_cache.tokenizer = _text_tokenizer(self.processing_class)
        self._kdsl_cache.device = self.accelerator.device
        self._kdsl_aligner = None

    def _save_checkpoint(self, model, trial):
        # Old checkpoints are rotated away only once this one is marked complete (see
        # kdsl.training.checkpoints), so a kill while saving always leaves the previous one usable.
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

        from kdsl.training.checkpoints import mark_complete

        limit = self.args.save_total_limit
        self.args.save_total_limit = None
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        self.accelerator.wait_for_everyone()
        if self.args.should_save:
            run_dir = Path(self._get_output_dir(trial=trial))
            mark_complete(run_dir / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}",
                          self.state.global_step)
            rotate_checkpoints(output_dir=str(run_dir), save_total_limit=limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=False)

    def _issue_warnings_after_load(self, load_result):
        # A model with tied weights (lm_head sharing the embedding) saves the shared tensor once,
        # so resuming reports `lm_head.weight` missing although loading the embedding filled it:
        # the two are one tensor. Only keys that really stayed unloaded are worth a warning.
        params = dict(self.model.named_parameters(remove_duplicate=False))
        missing = set(load_result.missing_keys)

        def filled_by_a_tie(key: str) -> bool:
            target = params.get(key)
            return target is not None and any(
                other.data_ptr() == target.data_ptr() for name, other in params.items()
                if name != key and name not in missing)

        kept = [k for k in load_result.missing_keys if not filled_by_a_tie(k)]
        super()._issue_warnings_after_load(load_result._replace(missing_keys=kept))

    # The one override of the training step --------------------------------------------------------
    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        return self.kdsl_apply(output)

    def kdsl_apply(self, output: dict) -> dict:
        scores = self._kdsl_cache.scores
        completions = self._kdsl_cache.completions
        n_local = output["completion_ids"].shape[0]
        if scores is None or len(completions) != n_local:
            raise RuntimeError("kdsl scores are missing for this batch: pass the program's reward "
                               "functions (the default) so the batch is scored by kdsl")
        mode = "train" if self.model.training else "eval"
        group = self.num_generations if mode == "train" else self.num_generations_eval
        seq_local, parts_local, seq = gathered_advantages(self.accelerator, self.kdsl_program.module,
                                                          scores, group, self.kdsl_advantage)

        module = self.kdsl_program.module
        texts = None
        if module.RULE_SPANS or module.MASKS:
            texts = completion_texts(completions)
        if module.RULE_SPANS:
            names = adv.column_names(module)
            span_columns = token_span_columns(module, self._aligner(), names, scores, texts,
                                              output["completion_ids"], output["completion_mask"])
            output["advantages"] = adv.token_advantages(seq_local, parts_local, span_columns)
        else:
            output["advantages"] = seq_local
        if module.MASKS:
            self._kdsl_apply_masks(output, texts)
        logs = self._logs["advantages"]
        if len(logs) >= seq.shape[0]:  # the completions table shows the advantages used
            for _ in range(seq.shape[0]):
                logs.pop()
            logs.extend(seq.tolist())
        return output

    # Token-level pieces ------------------------------------------------------------------------------
    def _aligner(self):
        if self._kdsl_aligner is None:
            from kdsl.training.tokens import TokenAligner

            self._kdsl_aligner = TokenAligner(_text_tokenizer(self.processing_class))
        return self._kdsl_aligner

    def _kdsl_apply_masks(self, output, texts):
        from kdsl.training.tokens import marker_mask

        ids, completion_mask = output["completion_ids"], output["completion_mask"]
        keep = output.get("tool_mask")
        keep = torch.ones_like(completion_mask) if keep is None else keep
        for mode, marker in self.kdsl_program.module.MASKS:
            removed = marker_mask(self._aligner(), ids, texts, marker, mode, completion_mask)
            keep = keep * (~removed).to(keep.dtype)
        output["tool_mask"] = keep
        output["num_items_in_batch"] = self.accelerator.gather((completion_mask * keep).sum()).sum()
