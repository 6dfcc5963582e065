"""Indoor positioning: RSSI filtering, path loss, zone estimation (pure numpy/scikit-learn core)."""
