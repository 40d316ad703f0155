"""Admission between a request and the planner: quotas, priorities, preemption, the
wait queue and its ETA. Every decision here is a pure function of (request, state,
quotas, clock); the services around them only read state and act."""
