"""The gridmesh agent: makes one GPU host match the desired HostSpec the controller sends.

Rules:
- Level-triggered: every HostSpec is the whole desired state; the agent acknowledges the revision
  it applied, or rejects it with a reason (and keeps enforcing the last one it accepted).
- Reconcilers observe -> diff (pure, into small printable actions) -> apply -> observe again.
- Static stability: the last accepted HostSpec is persisted before it is acknowledged and is
  enforced at start-up before the controller is reachable.
- Imports go one way: agent -> dataplane, hw, common. Nothing imports the agent.
"""
