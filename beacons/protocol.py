"""What a scanner's requests mean beyond their bytes, shared by the daemon that sends them and
the store server that reads them (as `signing` is for their authentication)."""

from __future__ import annotations

# A frame may reach the daemon's reader this long after it was heard (bluepy's helper, the OS
# pipe). A heartbeat's `through` stays that far behind what the reader has handled, and the
# server takes a batch as word that everything heard that far before its first frame arrived.
THROUGH_MARGIN_S = 0.5

# The store server accepts a sighting up to this old (a scanner back from an outage) and refuses
# the whole batch of an older one. A scanner drops what passed it (with a margin for clocks)
# rather than keep passers-by's rotating identifiers on disk only for them to be refused.
SIGHTING_MAX_AGE_S = 7 * 86400
