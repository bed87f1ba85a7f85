"""`gpuscale bench`: a seeded, trace-driven discrete-event simulator (simpy) of one GPU inference service,
to compare the real scaling policy (`gpuscale.control.policy.decide`) with the Kubernetes HPA, KEDA and
Knative's KPA on the same arrivals, the same job lengths and the same replica start-up time.

One module per job: `traces` (arrivals and job lengths), `anchors` (the other autoscalers, re-implemented
from their published algorithms), `policies` (the common interface, and ours through the real module),
`model` (the simpy model of the gateway, the replicas and the controllers), `report` (figures, tables,
the results page), `plot` (timelines; matplotlib only when drawing) and `cli`.
"""
