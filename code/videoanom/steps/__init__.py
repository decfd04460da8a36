"""Entry points of the pipeline steps; the scripts in ``code/`` are thin wrappers over these.

Each step is a plain function over named inputs, outputs and parameters, so that the local
runner and the Azure ML builders call the very same script with the same arguments.
"""
