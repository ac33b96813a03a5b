"""The only code that talks to the Kubernetes API."""

from modelfleet.k8s.client import Cluster

__all__ = ["Cluster"]
