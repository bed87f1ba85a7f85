"""The Kubernetes backend: the CRD's objects, the kopf operator, and the control loop's Kubernetes side."""
