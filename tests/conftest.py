import os
import tempfile

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
# the C kernels are compiled once per test session, not once per test's BIGCODE_HOME
os.environ.setdefault("BIGCODE_KERNEL_DIR", tempfile.mkdtemp(prefix="bigcode-kernels-"))


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch):
    """Every test gets its own BIGCODE_HOME and Hugging Face cache."""
    home = tmp_path_factory.mktemp("bigcode_home")
    monkeypatch.setenv("BIGCODE_HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hf" / "hub"))
    monkeypatch.delenv("BIGCODE_MODEL", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    return home


@pytest.fixture
def one_thread():
    """One torch thread: on a shared, busy CPU, several threads per tiny matmul cost far more than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
