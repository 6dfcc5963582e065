"""Store server: system of record and real-time core of Collective Mood."""
