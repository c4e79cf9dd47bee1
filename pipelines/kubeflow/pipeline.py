"""The ride-ranking training pipeline, and its compiler.

    .venv-pipelines/bin/python -m pipelines.kubeflow.pipeline pipelines/kubeflow/ride_ranking.yaml

(``make pipelines-compile``) writes the IR YAML that Kubeflow Pipelines runs; a test checks
the checked-in file is what the code compiles to.
"""

# No ``from __future__ import annotations``: kfp reads the pipeline's annotations as types.
import sys
from pathlib import Path

from kfp import compiler, dsl

from pipelines.kubeflow.components import build_training_set, evaluate, train

PIPELINE_NAME = "featurestore-ride-ranking"
COMPILED = Path(__file__).with_name("ride_ranking.yaml")


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Point-in-time training set from the featurestore service -> train -> evaluate",
)
def ride_ranking_pipeline(
    service_url: str,
    repo_path: str,
    entity_path: str,
    mlflow_tracking_uri: str,
    feature_service: str = "ride_ranking_v1",
    dataset_name: str = "ride_ranking",
    mlflow_experiment: str = "ride_ranking",
    api_key_env: str = "FEATURESTORE_API_KEY",
) -> float:
    built = build_training_set(
        service_url=service_url,
        repo_path=repo_path,
        entity_path=entity_path,
        feature_service=feature_service,
        dataset_name=dataset_name,
        api_key_env=api_key_env,
    )
    # A new version each run: never serve a cached training set from an older run.
    built.set_caching_options(False)
    trained = train(
        training_set=built.outputs["training_set"],
        repo_path=repo_path,
        service_url=service_url,
        dataset_name=built.outputs["name"],
        dataset_version=built.outputs["version"],
        mlflow_tracking_uri=mlflow_tracking_uri,
        mlflow_experiment=mlflow_experiment,
    )
    trained.set_caching_options(False)
    scored = evaluate(
        training_set=built.outputs["training_set"],
        model=trained.outputs["model"],
        run_id=trained.outputs["Output"],
        mlflow_tracking_uri=mlflow_tracking_uri,
    )
    scored.set_caching_options(False)
    return scored.outputs["Output"]


def compile_pipeline(path: Path = COMPILED) -> Path:
    """Write the pipeline's IR YAML to ``path``."""
    compiler.Compiler().compile(ride_ranking_pipeline, str(path))
    return path


if __name__ == "__main__":
    print(compile_pipeline(Path(sys.argv[1]) if len(sys.argv) > 1 else COMPILED))
