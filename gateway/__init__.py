"""The API gateway: the only public entry (CONTRACT §1-§4)."""
SERVICE = "gateway"
