"""The HTTP scoring service (``videoanom serve``, CONTRACT section 2b).

* :mod:`videoanom.serving.payloads`: request and response bodies, pure functions also used
  by the Azure ML online endpoint's entry script (no web framework imported);
* :mod:`videoanom.serving.models`: the models loaded once per location at start-up;
* :mod:`videoanom.serving.upload`: streaming a multipart upload to a size-capped temp file;
* :mod:`videoanom.serving.app`: the FastAPI application (routes, limits, API key);
* :mod:`videoanom.serving.server`: runs it with uvicorn.

Nothing is imported here, so ``payloads`` stays importable without FastAPI.
"""
