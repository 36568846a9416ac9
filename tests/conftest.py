import os
import pytest
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

def pytest_collection_modifyitems(config, items):
    "Under `--dist loadgroup`, each test file but the notebooks runs whole on one worker (its module fixtures are built once and its summary counts all its cases); the notebooks spread over the workers one by one"
    for item in items:
        if item.path.name != 'test_notebooks.py': item.add_marker(pytest.mark.xdist_group(item.path.stem))
