"""The original `modal/router_train.py`'s command lines,
`modal run modal/router_train.py --mode train|eval|infer --dataset-dir /datasets/routing_... --epochs 100 ...`,
and `modal serve modal/router_train.py::tensorboard`.

A thin entry file: everything lives in `moe_router.cloud`. This folder has no `__init__.py`, so `import modal` still
finds the installed package."""
from moe_router.cloud import app, router_train, modal_tensorboard as tensorboard  # noqa: F401
