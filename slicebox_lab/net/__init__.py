"""DICOM networking (see ARCHITECTURE.md): no tornado, no jupyter_server.

* ``nodes``: the SCPs and remote nodes the node is configured with (tables ``scps``, ``scus``);
* ``scp``: ``ScpService``, one pynetdicom listener per SCP (echo, store, find, get, move);
* ``qr``: C-FIND/C-GET/C-MOVE identifiers as index queries;
* ``scu``: this node calling remote nodes (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET);
* ``scu_jobs``: sends and retrieves as jobs (``scu-send``, ``scu-retrieve``);
* ``transport``: timeouts, PDU size, TCP_NODELAY, presentation contexts.
"""
