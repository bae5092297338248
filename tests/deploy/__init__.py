"""Validation of the deployment: knative/ (kustomize base), Containerfile, func.yaml."""
