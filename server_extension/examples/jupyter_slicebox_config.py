# Example configuration of a slicebox_lab node: copy to ~/.jupyter/jupyter_slicebox_config.py
# (for `jupyter slicebox`) or merge into jupyter_server_config.py (for JupyterLab / Notebook 7).
# `jupyter slicebox --help-all` lists every option with its help.
c = get_config()  # type: ignore[name-defined]  # noqa: F821  (Jupyter provides it when it loads the file)

# Where the node keeps its SQLite index and its stored DICOM files.
c.SliceboxApp.data_dir = "/srv/slicebox"

# A group that outgrows one machine: the index on PostgreSQL (pip install "slicebox_lab[postgres]").
# c.SliceboxApp.database_url = "postgresql+psycopg://slicebox@db.internal/slicebox"

# The stored files on another disk than the index.
# c.SliceboxApp.storage_dir = "/data/slicebox/dicom"

# A headless node for a research group: listen on all interfaces behind a TLS proxy, token auth.
c.ServerApp.ip = "0.0.0.0"
c.ServerApp.port = 8890
# c.IdentityProvider.token = "<a long random secret>"
