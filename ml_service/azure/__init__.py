"""Azure Machine Learning backends: the training and master pipelines, built with
azureml-sdk (v1, :mod:`ml_service.azure.v1`) or azure-ai-ml (v2, :mod:`ml_service.azure.v2`)
from the one definition in :mod:`ml_service.pipelines.definition`.

Both SDKs are optional extras and are imported only inside these modules; everything
backend-neutral (what each step runs, the search space, settings) lives in
:mod:`ml_service.azure.spec`.
"""
