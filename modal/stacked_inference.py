"""The original `modal/stacked_inference.py`'s command line,
`modal run modal/stacked_inference.py --routing-run R --routing-dataset datasets/D --max-samples 10`,
and `modal deploy modal/stacked_inference.py` for the web endpoint (`StackedInference.api`).

A thin entry file: everything lives in `moe_router.cloud`. This folder has no `__init__.py`, so `import modal` still
finds the installed package."""
from moe_router.cloud import app, stacked_inference, StackedInference  # noqa: F401
