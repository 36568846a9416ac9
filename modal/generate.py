"""The original `modal/generate.py`'s command line,
`modal run modal/generate.py --samples-per-adapter 500 --test-per-adapter 25`: verify each expert's latest dataset
(from the training history), then build a routing dataset on the moe-lora-data volume.

A thin entry file: everything lives in `moe_router.cloud`. This folder has no `__init__.py`, so `import modal` still
finds the installed package."""
from moe_router.cloud import app, generate_routing_data  # noqa: F401  (`app` for `modal deploy`; one local entrypoint for `modal run`)
