"""URL matching that leaves no cyclic garbage behind per request.

Werkzeug's StateMachineMatcher.match builds a recursive closure on every call: a reference cycle
(function, cells, sets) that only the cyclic garbage collector frees. At push-bench load that was
almost all of a worker's cyclic garbage, and the collections it forced paused the gevent loop for
tens of milliseconds (bench/push_latency.py: a 50 ms stall every ~30 s, the whole push p99).
A worker serves a handful of paths over and over, so a successful match is remembered per
(host, path, method, websocket) and only new paths walk the matcher.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from typing import Any, ClassVar

from werkzeug.routing import (
    BaseConverter,
    IntegerConverter,
    Map,
    Rule,
    RuleFactory,
    UnicodeConverter,
)
from werkzeug.routing.matcher import StateMachineMatcher

from store_server.models import MAX_ID

MAX_PATHS = 1024  # distinct matched paths remembered; forgotten all at once when full


class CachedMatcher(StateMachineMatcher):
    """StateMachineMatcher with successful matches remembered until the rules change."""

    def __init__(self, merge_slashes: bool) -> None:
        super().__init__(merge_slashes)
        self._hits: dict[tuple[str, str, str, bool], tuple[Rule, dict[str, Any]]] = {}

    def add(self, rule: Rule) -> None:
        """Add a rule (and forget every remembered match)."""
        self._hits.clear()
        super().add(rule)

    def update(self) -> None:
        """Re-sort the rules (and forget every remembered match)."""
        self._hits.clear()
        super().update()

    def match(
        self, domain: str, path: str, method: str, websocket: bool
    ) -> tuple[Rule, MutableMapping[str, Any]]:
        """The rule and converted values for a request; raises as Werkzeug's matcher does."""
        key = (domain, path, method, websocket)
        hit = self._hits.get(key)
        if hit is not None:
            return hit[0], dict(hit[1])  # a copy: callers may change theirs
        rule, values = super().match(domain, path, method, websocket)
        if len(self._hits) >= MAX_PATHS:
            self._hits.clear()
        self._hits[key] = (rule, dict(values))
        return rule, values


class BoundedInt(IntegerConverter):
    """`<int:...>` within the ids the database holds (models.MAX_ID): a larger number is a path
    nobody serves (404), not an out-of-range error deep in the SQL driver (a 500)."""

    def __init__(
        self, map: Map, fixed_digits: int = 0, min: int | None = None, max: int | None = None
    ) -> None:
        super().__init__(map, fixed_digits, min, MAX_ID if max is None else max)


class Text(UnicodeConverter):
    """`<name>` and `<string:...>` without NUL: PostgreSQL text cannot hold one, so a path
    carrying it names nothing stored (404) rather than failing the query (a 500)."""

    def __init__(self, map: Map, *args: Any, **kwargs: Any) -> None:
        super().__init__(map, *args, **kwargs)
        self.regex = self.regex.replace("[^/]", "[^/\\x00]", 1)


class RouteMap(Map):
    """Werkzeug's Map with the caching matcher (Flask's url_map_class)."""

    default_converters: ClassVar[dict[str, type[BaseConverter]]] = {
        **Map.default_converters,
        "int": BoundedInt,
        "default": Text,
        "string": Text,
    }

    def __init__(self, rules: Iterable[RuleFactory] | None = None, **kwargs: Any) -> None:
        # Merged slashes answer "//x" with a redirect page (HTML, and a scanner's POST is not
        # followed); a path that is not ours is a JSON 404 like any other.
        kwargs.setdefault("merge_slashes", False)
        super().__init__(None, **kwargs)
        self._matcher = CachedMatcher(self._matcher.merge_slashes)
        for rule in rules or ():
            self.add(rule)
