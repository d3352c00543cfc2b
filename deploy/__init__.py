"""Deployment: the Dockerfile's deployables, compose and Kubernetes manifests (deploy/generate.py)."""
