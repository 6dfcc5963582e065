"""BLE side of Collective Mood: frame codecs, rotating identifiers, scanner daemon."""
