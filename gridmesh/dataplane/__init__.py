"""Host networking for workspaces: network namespaces, WireGuard (kernel via pyroute2, or
wireguard-go through its UAPI socket), nftables default-deny, and OVN via OVSDB.

Rules: decisions (peer lists, rule sets) are pure functions over frozen dataclasses; the code that
touches the kernel or a daemon is thin and does what it is told. The agent imports this package;
this package imports nothing from the agent or the controller.
"""
