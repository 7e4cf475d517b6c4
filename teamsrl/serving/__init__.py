"""Ray Serve hosting of the expert and reviewer LLMs (see `deployment.py`, `client.py`)."""
