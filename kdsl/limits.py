"""The bounds every stage relies on, in one place (docs/security.md lists them for users).

Each keeps the compiler and the programs it makes finite on any input: a spec from a colleague,
a mutated spec from a fuzzer, a dataset from the internet.
"""

# Expressions nest at most this deep, in the parse tree and in the checked graph (lets and defs
# included): the checker, the analyses, explanations and the reference interpreter recurse over
# them, and this stays far below Python's recursion limit.
MAX_NESTING = 200
# The largest magnitude of a number written in a spec: programs compute in float32 by default,
# and a larger constant could not be made a tensor.
MAX_NUMBER = 3.4028234663852886e38  # torch.finfo(torch.float32).max
# A vector or raster declares at most this many bands (a batch holds one column per band).
MAX_BANDS = 4096
MAX_VERSION = 2**31 - 1
# An imported spec is a `.kd` text file of at most this many bytes, named by a path of at most
# this many characters.
MAX_SPEC_BYTES = 1024 * 1024
MAX_IMPORT_PATH = 1024
# A completion gives at most this many boxes (`as boxes`), and a dataset row at most this many
# in a `boxes` column: more make the value invalid (a batch pads every row to its longest list).
MAX_BOXES = 1000
