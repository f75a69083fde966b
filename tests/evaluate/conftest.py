import pytest


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    from seawall.generation.tiny import build_tiny_chat_model

    return build_tiny_chat_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_data():
    from seawall.lab.tiny import tiny_datasets

    return tiny_datasets()


# The mini experiments' training settings: a few short sequences, so every stage trains in seconds.
MINI_TRAIN = {"batch_size": 4, "grad_accum": 1, "max_length": 96, "learning_rate": 5e-3}


def mini_experiment_config(
    model,
    output,
    methods,
    name="mini",
    train=None,
    max_steps=None,
    align_data=None,
    eval=None,
    **fields,
):
    """The mini experiment on a tiny model: a few align, degrade and customize examples, sst2 as the task, a tiny
    evaluation. `train` updates every stage's training settings, `max_steps` caps stages by name (e.g.
    {"align": 1}), `align_data` and `eval` update those sections, `fields` are further top-level fields."""
    from seawall.evaluate.experiment import ExperimentConfig

    def stage_train(stage, **settings):
        capped = {"max_steps": max_steps[stage]} if max_steps and stage in max_steps else {}
        return {**MINI_TRAIN, **(train or {}), **settings, **capped}

    return ExperimentConfig.model_validate(
        {
            "name": name,
            "model": str(model),
            "output": str(output),
            **fields,
            "align": {
                "data": {
                    "n_harmful": 4,
                    "n_hh_refusals": 0,
                    "n_benign": 4,
                    "harmful_sources": ["advbench"],
                    **(align_data or {}),
                },
                "train": stage_train("align", method="lora", lora_r=4),
            },
            "degrade": {
                "data": {"n_pairs": 4, "min_response_words": 3},
                "train": stage_train("degrade", method="full"),
            },
            "customize": {
                "tasks": ["sst2"],
                "harmful_shares": [0.25],
                "n_train": 8,
                "train": stage_train("customize", method="lora", lora_r=4),
            },
            "methods": methods,
            "eval": {
                "n_harmful_per_suite": 1,
                "n_benign_per_suite": 1,
                "n_task": 2,
                "decoding": {"max_new_tokens": 4, "batch_size": 8},
                "n_boot": 50,
                **(eval or {}),
            },
        }
    )


@pytest.fixture(scope="session")
def mini_experiment():
    """`mini_experiment_config`, for the test modules (a conftest is not importable by name)."""
    return mini_experiment_config
