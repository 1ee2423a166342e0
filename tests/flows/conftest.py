import pytest

from tests.support.registry import two_runs as build_two_runs


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two pipeline runs on a DVC-tracked project, built for each module that reads them
    (the registry tests move its aliases)."""
    return build_two_runs(tmp_path_factory.mktemp("registry"))
