"""The embedded example: what `kdsl train` uses when it is given no model and no data.

`landsat` holds the 120 labelled Landsat 8 samples of the `spyndex` package as prompts and
columns, their train/held-out split and the default training settings; `tiny_landcover/` is the
219k-parameter model made from scratch for them (`scripts/build_tiny_model.py`). These are example
assets, not part of the compiler: nothing outside `kdsl train`, `kdsl ablate` and their tests
reads them.
"""
