"""The tensor phase's constants are made once per device, dtype and batch size and shared by
the batches that follow; an output that is a constant is still the caller's own tensor."""

import torch

import kdsl
from kdsl.runtime import execute

SPEC = """spec c version 1
input {
  x: float
}
enum Kind { A, B }
let three = 3
let kind = Kind.B
let scaled = x * 2.5 + three
level l {
  rule big: scaled > 4
  rule is_b: kind == Kind.B
}
"""


def test_constants_are_made_once_for_batches_of_one_size():
    program = kdsl.loads(SPEC)
    ref = torch.zeros(4)
    first = execute.constants(program.module.CONSTANTS, ref)
    again = execute.constants(program.module.CONSTANTS, torch.zeros(4))
    assert again is first
    assert [float(x[0]) for x, _ in first] == [3.0, 1.0, 2.5, 4.0]
    assert first[1][0].dtype == torch.long  # an enum member
    assert all(x.shape == (4,) and bool(m.all()) for x, m in first)
    other_size = execute.constants(program.module.CONSTANTS, torch.zeros(3))
    assert other_size is not first and other_size[0][0].shape == (3,)
    as_double = execute.constants(program.module.CONSTANTS, torch.zeros(4, dtype=torch.float64))
    assert as_double[2][0].dtype == torch.float64 and as_double[1][0].dtype == torch.long


def test_scores_do_not_share_memory_with_the_constants():
    program = kdsl.loads(SPEC)
    scores = program.score(["", ""], x=[1.0, 0.0])
    assert scores.values["three"].tolist() == [3.0, 3.0]
    # An enum let's validity is its constant's mask as it is: run hands back a copy.
    assert scores.valid["kind"].tolist() == [True, True]
    for tensor in (*scores.values.values(), *scores.valid.values(), *scores.rules.values()):
        tensor.zero_()  # the caller may change what it was given
    again = program.score(["", ""], x=[1.0, 0.0])
    assert again.values["three"].tolist() == [3.0, 3.0]
    assert again.valid["kind"].tolist() == [True, True]
    assert again.rules["is_b"].tolist() == [1.0, 1.0]
    assert again.rules["big"].tolist() == [1.0, 0.0]
