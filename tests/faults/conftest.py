"""Every test here injects a fault and checks the invariant: a one-line error (exit code 2)
or a full account of every row, and the data either unchanged or fully updated. They import,
run stages or start processes in namespaces: integration tests, which `make check` leaves out."""

import pytest


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.parent.name == "faults":
            item.add_marker(pytest.mark.faults)
            item.add_marker(pytest.mark.integration)
