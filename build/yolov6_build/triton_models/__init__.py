"""The Triton Python backend models; each repository ``<model>/1/model.py`` imports its class from here."""
