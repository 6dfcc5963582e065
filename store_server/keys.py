"""Every Redis key the system uses, in one place, so that erasure and audits can enumerate them.

Redis holds only live, expiring state; the system of record is SQL.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix (tests use a unique prefix per run)."""

    prefix: str = "cm:"

    def nonce(self, scanner_id: int, nonce: str) -> str:
        """Replay guard for one signed request (expires after the timestamp window)."""
        return f"{self.prefix}nonce:{scanner_id}:{nonce}"

    def batch(self, scanner_id: int, batch_id: str) -> str:
        """Idempotency marker for one sighting batch."""
        return f"{self.prefix}batch:{scanner_id}:{batch_id}"

    def resolver(self) -> str:
        """Hash: keyed hash of a current EID (resolver.lookup_key, never the EID itself) ->
        consented emitter entry (JSON); plus its `version` and `ticket` fields."""
        return f"{self.prefix}resolver"

    def resolver_building(self) -> str:
        """Hash: the resolver table being rebuilt, renamed to `resolver` (or deleted) in the
        transaction that wrote it, so it never outlives that transaction."""
        return f"{self.prefix}resolver:building"

    def resolver_tickets(self) -> str:
        """Counter numbering the resolver table's rebuilds in the order they read SQL (a number,
        never an identifier), so that an older rebuild never replaces a newer one."""
        return f"{self.prefix}resolver:tickets"

    def tracks(self, venue_id: int) -> str:
        """Hash: subscriber id -> positioning and presence state at one venue."""
        return f"{self.prefix}track:{venue_id}"

    def venue_drift(self, venue_id: int) -> str:
        """String: the venue's radio drift per scanner (JSON, dB and tracks behind it), as the
        jobs last read it from the tracking states; no identifier of anyone."""
        return f"{self.prefix}drift:{venue_id}"

    def occupants(self, venue_id: int) -> str:
        """Hash: subscriber id -> the zone their state at this venue is in (only those in one).

        An index for finding a zone's occupants without reading every state of the venue;
        the state stays the truth, so a stale entry is harmless and is read past."""
        return f"{self.prefix}occupants:{venue_id}"

    def venue_state_patterns(self) -> tuple[str, str]:
        """SCAN patterns of every venue's tracking states and occupants, also of venues that
        no longer exist (erasure reaches them all)."""
        return f"{self.prefix}track:*", f"{self.prefix}occupants:*"

    def last_seen(self) -> str:
        """Sorted set of `venue:subscriber` by last sighting time, for the exit sweeper."""
        return f"{self.prefix}lastseen"

    def pending_events(self) -> str:
        """Stream: presence events committed with their state but not yet delivered."""
        return f"{self.prefix}events:pending"

    def delivering(self, entry_id: str) -> str:
        """String: a pending event taken for delivery by one process (a lease: a delivery that
        died is retried, a running or finished one is never repeated); expires in a minute."""
        return f"{self.prefix}delivering:{entry_id}"

    def journal(self) -> str:
        """Stream: audit entries and visits appended with the device events they record, not
        yet written to SQL (journal.py)."""
        return f"{self.prefix}journal"

    def outbox(self, device_id: int) -> str:
        """Stream: events for one device not yet acknowledged."""
        return f"{self.prefix}outbox:{device_id}"

    def scanner_health(self, scanner_id: int) -> str:
        """Hash: the last heartbeat of one scanner (no identifier of anyone; kept without expiry,
        since how long a scanner has been silent is what it tells)."""
        return f"{self.prefix}scanner:{scanner_id}:health"

    def dark_zones(self) -> str:
        """Hash: venue id -> its zones whose every scanner went silent (JSON list), as the jobs
        last judged them; expires within seconds if they stop."""
        return f"{self.prefix}darkzones"

    def dropped(self, venue_id: int) -> str:
        """Counter of sightings that resolved to nobody: a number, never an identifier."""
        return f"{self.prefix}dropped:{venue_id}"

    def ratelimit(self, name: str) -> str:
        """Counter of one rate-limit window (sign-in, opt-in, ingest per scanner)."""
        return f"{self.prefix}ratelimit:{name}"

    def scanner_minute(self, kind: str, scanner_id: int, now: float) -> str:
        """Counter of a scanner's requests of one kind (batches, heartbeats) in now's minute."""
        return self.ratelimit(f"{kind}:{scanner_id}:{int(now // 60)}")

    def lock(self, name: str) -> str:
        """Short-lived lock so that one process runs a periodic job at a time."""
        return f"{self.prefix}lock:{name}"

    def ingest_stream(self, partition: int) -> str:
        """Stream: verified sighting batches of one venue partition, drained by ingest workers."""
        return f"{self.prefix}ingest:{partition}"

    def pairing_code(self, digest: str) -> str:
        """Device id and expiry of one unredeemed pairing code, keyed by the code's HMAC."""
        return f"{self.prefix}pairing:code:{digest}"

    def pairing_device(self, device_id: int) -> str:
        """Which pairing-code key a device's current code lives at (a newer one replaces it)."""
        return f"{self.prefix}pairing:device:{device_id}"

    def failures(self, scope: str, digest: str) -> str:
        """Sorted set of recent failed attempts (sign-in, pairing) of one HMAC-keyed identity."""
        return f"{self.prefix}failures:{scope}:{digest}"

    def session(self, digest: str) -> str:
        """Live sign-in (portal, auditor, subscriber), keyed by its id's HMAC; holds its owner's."""
        return f"{self.prefix}session:{digest}"

    def sessions_of(self, digest: str) -> str:
        """Set of one principal's live session-id HMACs, so a password change ends them all."""
        return f"{self.prefix}sessions:{digest}"

    def device_sockets(self, device_id: int) -> str:
        """Hash of a device's live Socket.IO session ids, whichever worker holds them, each to
        the holding worker's token (live_sockets: is the device online, and on a live worker)."""
        return f"{self.prefix}device:{device_id}:live"

    def staff_sockets(self, staff_id: int) -> str:
        """Hash of a staff member's live /portal Socket.IO session ids, whichever worker holds
        them (a sign-out or a new password served by another worker still closes them), each
        to the holding worker's token."""
        return f"{self.prefix}staff:{staff_id}:live"

    def worker_alive(self, token: str) -> str:
        """Short-lived claim of a web worker holding live sockets that it is still running."""
        return f"{self.prefix}worker:{token}:alive"

    def pattern(self) -> str:
        """SCAN pattern matching every key of this prefix."""
        return f"{self.prefix}*"
