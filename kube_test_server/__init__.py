"""A Kubernetes API test server: the API semantics the gpuscale operator relies on, over real HTTP.

It is a test-support package: the operator's tests (and a user, with ``python -m kube_test_server``)
point kopf, the official ``kubernetes`` client or ``kubectl`` at it exactly as at a cluster. Where it
knowingly differs from a real API server, docs/kube-test-server.md says so.
"""
