"""The Kubernetes runtime: sessions as pods, workspaces as claims.

``manifests`` builds every object Sandman asks the API server for, as plain dicts
of the API's JSON shape (pure, tested by comparing dicts, like KubeSpawner's
``make_pod``); the backend beside it sends them.
"""
