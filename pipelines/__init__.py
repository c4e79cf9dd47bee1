"""Orchestration that drives the store (layer 4): Airflow DAGs, a Kubeflow pipeline, MLflow lineage.

The modules directly under ``pipelines`` import only the project and the standard scientific
stack, plus MLflow in :mod:`pipelines.lineage`; ``pipelines.airflow_dags`` and
``pipelines.kubeflow`` import Airflow and kfp. Those heavy dependencies live in their own
environment, ``.venv-pipelines`` (``make pipelines-env``, pinned in
``pipelines/requirements.txt``), never in the service's ``.venv``.
"""
