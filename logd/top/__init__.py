"""logctl top: a live view of a running logd's listeners, outputs and process."""
