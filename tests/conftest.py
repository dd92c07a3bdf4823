"""Shared pytest set-up for the whole suite. Keep it minimal and generic:
chapter-specific fixtures live in their own test files (or a conftest next to them).
"""

import os

# Set at import time, before any test imports transformers / huggingface_hub / datasets:
# a test that reaches for a hub then fails at once instead of hanging on the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config):
    # pyproject.toml lists the marker too; registering it here keeps `pytest tests/...`
    # from another rootdir warning-free.
    config.addinivalue_line("markers", "slow: takes more than ~10 s on 2 CPU cores")
    # Under pytest-xdist, share the cores between the workers: two workers with two torch threads
    # each on two cores run several times slower than with one thread each.
    # Notebook kernels started by the tests inherit OMP_NUM_THREADS.
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        threads = max(1, (os.cpu_count() or 1) // workers)
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)


import pytest  # noqa: E402


@pytest.fixture(scope="session", params=["gpt2", "gpt_neox", "llama"])
def tiny_checkpoint(request, tmp_path_factory):
    """A local directory holding a tiny random GPT-2, GPT-NeoX or Llama model and tokenizer."""
    from tiny_models import save_tiny_checkpoint

    return save_tiny_checkpoint(request.param, tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="session")
def course_model():
    """The shipped course model (transformers), loaded once per test process. Tests must not change it:
    one that trains or wraps a model loads its own copy."""
    from utils.models import load_model

    return load_model("course")


@pytest.fixture(scope="session")
def course_tokenizer():
    """The course model's tokenizer, loaded once per test process. Tests must not change its settings
    (pass ``padding_side=`` to the call instead of setting the attribute)."""
    from utils.models import load_tokenizer

    return load_tokenizer("course")
