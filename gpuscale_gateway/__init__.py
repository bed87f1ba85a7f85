"""gpuscale's gateway: one FIFO queue in front of one-slot replicas (pod servers).

Every request waits in one queue and goes to the ready replica with the fewest outstanding requests,
never more than its slots (plus `prefetch`), so a GPU runs one job at a time and the queue depth is
the one number the autoscaler reads.
"""
