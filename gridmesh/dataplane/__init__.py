"""Host networking for workspaces: network namespaces, WireGuard (kernel via pyroute2, or
wireguard-go through its UAPI socket), nftables default-deny, and OVN via OVSDB.

Rules: decisions (peer lists, rule sets) are pure functions over frozen dataclasses; the code that
touches the kernel or a daemon is thin and does what it is told. The agent imports this package;
this package imports nothing from the agent or the controller.

Modules:
- ``model``: the overlay vocabulary (``WgPeer``, ``WgInterfaceSpec``, ``OverlaySpec``, observed
  ``WgDeviceState``/``LinkState``, reported ``OverlayStatus``); public keys only.
- ``naming``: device and namespace names, endpoint and address text both sides agree on.
- ``keys``: key making (``wg pubkey`` derives public halves), the 0600 ``KeyStore``, the leak check.
- ``device``: the ``WireGuardBackend`` protocol and ``DeviceChange`` (the one carrier of a private key).
- ``uapi`` + ``userspace``: wireguard-go; ``kernel``: the in-kernel module; ``backend``: the choice.
- ``links``: namespaces and links (pyroute2 from a thread that joined the namespace).
- ``fake``: an in-memory host with WireGuard's rules, for tests; ``wgshow``: the operator's view.
"""
