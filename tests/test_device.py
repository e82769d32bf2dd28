"""The GPU claims, checked on whatever device ``KDSL_TEST_DEVICE`` names (``cpu`` by default):

    KDSL_TEST_DEVICE=cuda pytest -m device

Every shipped spec's compiled program, the advantage estimators, the span-to-token mapping and
the trainer's kdsl step run on the device and must give what they give on the CPU (to float
tolerance). On CUDA, the tensor phase of every shipped spec, the estimators and the token mapping
also run under ``torch.cuda.set_sync_debug_mode("error")``, which raises at any host sync, and the
tensor phase compiles with ``torch.compile(fullgraph=True)`` (inductor). On the CPU the sync checks
cannot run and say so when skipped; the fullgraph compile runs with the ``eager`` backend, which
still fails at any graph break. benchmarks/gpu_check.py runs this file and the GPU benchmarks.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
import torch

import kdsl
from kdsl.runtime import execute
from kdsl.training import advantages as adv

DEVICE = torch.device(os.environ.get("KDSL_TEST_DEVICE", "cpu"))
ON_CUDA = DEVICE.type == "cuda"
pytestmark = pytest.mark.device
needs_cuda = pytest.mark.skipif(
    not ON_CUDA, reason="a CUDA-only check (host syncs): run KDSL_TEST_DEVICE=cuda pytest -m device "
                        "on a machine with a GPU, or benchmarks/gpu_check.py")
ROOT = Path(__file__).resolve().parents[1]


def test_the_device_asked_for_is_there():
    # An explicit request for a GPU that is missing must fail, not fall back to the CPU unseen.
    if ON_CUDA:
        assert torch.cuda.is_available(), "KDSL_TEST_DEVICE=cuda, but torch sees no CUDA device"
    assert torch.zeros(1, device=DEVICE).device.type == DEVICE.type


def _specs():
    from test_hostile_completions import shipped_specs

    return shipped_specs()


COMPLETIONS = [
    "<think>NIR far above red, NDVI high: vegetation.</think><answer>Vegetation</answer>",
    "<think>Green above SWIR, MNDWI positive: water.</think><answer>Water</answer>",
    "<think>\nFirst, 2 + 2 = 4.\n</think>\n<answer>\nThe answer is $\\boxed{2}$\n</answer>",
    "<answer>[0, 0, 10, 10] (2,2),(3,3)</answer> B",
    "",
    "<answer>nan</answer><think>a\ud800b</think>",
]


def _columns(program, n: int) -> dict:
    from test_hostile_completions import ordinary_columns

    columns = ordinary_columns(program.module, n)
    for name, kind, _node, _options in program.module.INPUTS:  # one invalid value per column
        columns[name] = list(columns[name])
        columns[name][1] = None
        if kind in ("float", "int"):
            columns[name][2] = float("nan")
    return columns


@pytest.fixture(scope="module")
def tokenizer():
    from tests.tiny import byte_level_tokenizer

    return byte_level_tokenizer()


@pytest.mark.parametrize("spec", _specs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_spec_scores_the_same_on_the_device(spec, tokenizer):
    program = kdsl.load(spec)
    columns = _columns(program, len(COMPLETIONS))
    on_cpu = program.outputs(COMPLETIONS, device="cpu", tokenizer=tokenizer, **columns)
    on_device = program.outputs(COMPLETIONS, device=DEVICE, tokenizer=tokenizer, **columns)
    assert on_cpu.keys() == on_device.keys()
    for key, value in on_device.items():
        assert value.device.type == DEVICE.type, key
        torch.testing.assert_close(value.cpu(), on_cpu[key], rtol=1e-5, atol=1e-5, msg=key)
    weights = {lv.name: float(lv.weight) for lv in program.ir.levels}
    total = sum(w * on_device[f"level.{name}"] for name, w in weights.items())
    torch.testing.assert_close(on_device["reward"], total.to(on_device["reward"].dtype))


def _env_on_device(program, tokenizer):
    """The text phase's results, put on the device: what the tensor phase starts from."""
    module = program.module
    columns = _columns(program, len(COMPLETIONS))
    texts = execute.completion_texts(COMPLETIONS)
    ref = torch.zeros(len(texts), device=DEVICE)
    interner = execute.col.Interner(module.STRINGS)
    env = execute.prepare_columns(module, columns, len(texts), ref, interner)
    extraction = execute.Extraction(texts, ref, interner, tokenizer, columns,
                                    os.environ.get("KDSL_SIMILARITY_MODEL"))
    module.extract(texts, env, extraction)
    if module.JUDGED:  # a spec's judged values: a judge that gives the best grade, a score of 1
        from kdsl.runtime.judging import Answer, Judging

        class Best:
            identity = "best"

            def grade(self, prompts, choices):
                return [Answer(text=choices[-1]) for _ in prompts]

            def score(self, texts):
                return [Answer(value=1.0) for _ in texts]

        judging = Judging(models={name: Best() for name, _kind in module.MODELS})
        judging.fill(module, env, extraction.shown, module.demand(**env), ref)
    return env


@contextlib.contextmanager
def no_host_sync():
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


@needs_cuda
@pytest.mark.parametrize("spec", _specs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_tensor_phase_makes_no_host_sync(spec, tokenizer):
    program = kdsl.load(spec)
    env = _env_on_device(program, tokenizer)
    with no_host_sync():
        out = program.module.evaluate(**env)
    assert out["reward"].device.type == "cuda"


@pytest.mark.parametrize("spec", _specs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_tensor_phase_compiles_with_fullgraph(spec, tokenizer):
    program = kdsl.load(spec)
    env = _env_on_device(program, tokenizer)
    eager = program.module.evaluate(**env)
    torch._dynamo.reset()
    backend = "inductor" if ON_CUDA else "eager"  # eager on a CPU: the graph, without C++ builds
    compiled = torch.compile(program.module.evaluate, fullgraph=True, backend=backend)(**env)
    for key, value in eager.items():
        torch.testing.assert_close(compiled[key], value, rtol=1e-5, atol=1e-5, msg=key)


# ---- advantages and token masks ----------------------------------------------------------------
# The trainer tests' spec: a gate, a rule `on` the answer, one `on` the reasoning, `mask after`.
from test_trainer_tokens import SPEC  # noqa: E402

GROUP = ["<think>two plus two</think><answer>4</answer>", "<answer>5</answer> and more",
         "<think>so four</think><answer>4</answer>", "none at all"]


@pytest.fixture(scope="module")
def steps():
    return kdsl.loads(SPEC, "steps.kd")


CONFIGS = [adv.AdvantageConfig("grpo", scale=s, aggregate=a)
           for s in ("group", "batch", "none") for a in ("sum", "per_level", "per_rule")]
CONFIGS += [adv.AdvantageConfig("rloo", aggregate=a) for a in ("sum", "per_level", "per_rule")]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.estimator}-{c.scale}-{c.aggregate}")
def test_advantages_are_the_same_on_the_device(steps, config):
    scores = steps.score(GROUP, gold=[4.0] * 4, device=DEVICE)
    comp = adv.components(steps.module, scores)
    seq, parts = adv.advantages(comp, 2, config)
    cpu_seq, cpu_parts = adv.advantages(comp.to("cpu"), 2, config)
    assert seq.device.type == DEVICE.type
    torch.testing.assert_close(seq.cpu(), cpu_seq)
    torch.testing.assert_close(parts.cpu(), cpu_parts)
    if config.estimator == "grpo" and config.scale == "none" and config.aggregate == "sum":
        # rewards 3.5, 1.0 | 3.5, 0.0 (format 1 + accuracy 2 + style 0.5), group means subtracted
        torch.testing.assert_close(seq.cpu(), torch.tensor([1.25, -1.25, 1.75, -1.75]))


def _aligned(tokenizer, texts):
    ids = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
    return ids["input_ids"].to(DEVICE), ids["attention_mask"].to(DEVICE)


def test_span_token_masks_are_the_same_on_the_device(tokenizer):
    from kdsl.training.tokens import (
        TokenAligner,
        char_to_byte_offsets,
        marker_mask,
        span_token_mask,
    )

    ids, mask = _aligned(tokenizer, GROUP)
    aligner = TokenAligner(tokenizer)
    starts, ends = aligner.byte_offsets(ids, mask)
    span = [(t.find("<answer>") + 8, t.find("</answer>")) for t in GROUP]
    lo = torch.tensor([char_to_byte_offsets(t, [a])[0] if a >= 8 else -1 for t, (a, _) in zip(GROUP, span)],
                      device=DEVICE)
    hi = torch.tensor([char_to_byte_offsets(t, [b])[0] if b >= 0 else -1 for t, (_, b) in zip(GROUP, span)],
                      device=DEVICE)
    hit = span_token_mask(starts, ends, lo, hi)
    after = marker_mask(aligner, ids, GROUP, "</answer>", "after", mask)
    cpu_starts, cpu_ends = TokenAligner(tokenizer).byte_offsets(ids.cpu(), mask.cpu())
    assert torch.equal(hit.cpu(), span_token_mask(cpu_starts, cpu_ends, lo.cpu(), hi.cpu()))
    assert torch.equal(after.cpu(), marker_mask(TokenAligner(tokenizer), ids.cpu(), GROUP, "</answer>",
                                                "after", mask.cpu()))
    # the tokens the answer span covers decode to text inside it; none after </answer> in row 0
    for row, text in enumerate(GROUP):
        chosen = ids[row][hit[row]].tolist()
        if span[row][0] >= 8:
            assert tokenizer.decode(chosen) in text[span[row][0] - 1:span[row][1] + 1]
    assert not after[0].any() and after[1].any()


def test_the_trainers_kdsl_step_is_the_same_on_the_device(steps, tokenizer):
    """What KdslGRPOTrainer.kdsl_apply computes: advantages from gathered rewards, token-level
    advantages for rules `on` an output, the loss mask of `mask after`."""
    from accelerate import Accelerator

    from kdsl.training.tokens import TokenAligner
    from kdsl.training.trl import gathered_advantages, token_span_columns

    def step(device):
        accelerator = Accelerator(cpu=device.type == "cpu")
        scores = steps.score(GROUP, gold=[4.0] * 4, device=device)
        local, parts, _ = gathered_advantages(accelerator, steps.module, scores, 2,
                                              steps.advantage_config)
        ids, mask = (t.to(device) for t in _aligned(tokenizer, GROUP))
        columns = token_span_columns(steps.module, TokenAligner(tokenizer),
                                     adv.column_names(steps.module), scores, GROUP, ids, mask)
        return adv.token_advantages(local, parts, columns)

    on_device = step(DEVICE)
    assert on_device.device.type == DEVICE.type and on_device.dim() == 2
    torch.testing.assert_close(on_device.cpu(), step(torch.device("cpu")))


@needs_cuda
def test_advantages_and_token_masks_make_no_host_sync(steps, tokenizer):
    from kdsl.training.tokens import TokenAligner, span_token_mask

    scores = steps.score(GROUP, gold=[4.0] * 4, device=DEVICE)
    comp = adv.components(steps.module, scores)
    ids, mask = _aligned(tokenizer, GROUP)
    aligner = TokenAligner(tokenizer)
    aligner.byte_offsets(ids, mask)  # builds the device's byte-length table once, outside
    lo = torch.tensor([8, 8, 8, -1], device=DEVICE)
    hi = torch.tensor([12, 12, 12, -1], device=DEVICE)
    with no_host_sync():
        for config in CONFIGS:
            adv.advantages(comp, 2, config)
        starts, ends = aligner.byte_offsets(ids, mask)
        span_token_mask(starts, ends, lo, hi)
