import pytest


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    from seawall.generation.tiny import build_tiny_chat_model

    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_data():
    from seawall.lab.tiny import tiny_datasets

    return tiny_datasets()
