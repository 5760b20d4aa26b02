"""Sources of the Triton Python backend models (copied into the repository as ``<model>/1/model.py``)."""
