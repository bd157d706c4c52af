import os
import shutil
import signal
import tempfile

import pytest
import torch

# nothing of the developer's or the CI's own set-up reaches a test: no BIGCODE_* (model choices, the
# kernel switch, debug mode, colour, a kernel directory) survives from the environment
for _name in [name for name in os.environ if name.startswith("BIGCODE_")]:
    del os.environ[_name]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
# the C kernels are compiled once per test session, not once per test's BIGCODE_HOME
KERNEL_DIR = tempfile.mkdtemp(prefix="bigcode-kernels-")
os.environ["BIGCODE_KERNEL_DIR"] = KERNEL_DIR
# the interrupt tests send SIGINT to the programs they start. A suite run as a background job of a script
# (`pytest &`) inherits SIGINT ignored, and an ignored signal stays ignored across exec (the CLI, like Python
# itself, leaves it so): those programs would never see the Ctrl-C. They get Python's usual one instead.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session", autouse=True)
def kernel_dir():
    """The session's kernel directory (removed when the session ends: pytest_sessionfinish)."""
    return KERNEL_DIR


def pytest_sessionfinish(session):
    """Remove this process's kernel directory: every worker's, and the empty one of a parallel run's controller,
    which imports this file too but runs no test."""
    shutil.rmtree(KERNEL_DIR, ignore_errors=True)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory, monkeypatch):
    """Every test gets its own BIGCODE_HOME and Hugging Face cache, and no BIGCODE_* a test before it set."""
    for name in [name for name in os.environ if name.startswith("BIGCODE_") and name != "BIGCODE_KERNEL_DIR"]:
        monkeypatch.delenv(name)
    home = tmp_path_factory.mktemp("bigcode_home")
    monkeypatch.setenv("BIGCODE_HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hf" / "hub"))
    monkeypatch.delenv("NO_COLOR", raising=False)
    return home


@pytest.fixture(autouse=True)
def fixed_draft_prices(request, monkeypatch):
    """Draft lengths from the fixed prior, not from timed steps: a test about what speculation makes (the same
    text, drafts reported) must not depend on how busy the machine was when a 2-token turn was timed.
    tests/test_step_costs.py measures the prices themselves."""
    if request.module.__name__.endswith("test_step_costs"):
        return
    from bigcode_cli.model import step_costs

    monkeypatch.setattr(step_costs.StepCosts, "relative",
                        lambda self, tokens, slope, sampled=False: 1.0 + slope * (tokens - 1))


@pytest.fixture
def one_thread():
    """One torch thread: on a shared, busy CPU, several threads per tiny matmul cost far more than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
