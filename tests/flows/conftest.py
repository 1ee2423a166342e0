import pytest

from tests.support.registry import two_runs as build_two_runs


@pytest.fixture(scope="session")
def two_runs(tmp_path_factory):
    """One build for the registry, lineage and MLflow UI tests (two pipeline runs)."""
    return build_two_runs(tmp_path_factory.mktemp("registry"))
