"""Site surveys uploaded by the installer: checked against the venue, scored per zone by the
positioning package (leave one track out), and optionally applied as the venue's calibration."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from shapely.geometry import shape

from store_server.models import Venue
from store_server.positioning.live import VenueModel
from store_server.positioning.report import zone_accuracy_report
from store_server.positioning.venue import VenueFileError, load_readings


class SurveyError(ValueError):
    """An upload problem, as a catalogue key and its values."""

    def __init__(self, key: str, **values: object) -> None:
        super().__init__(key)
        self.key, self.values = key, values


def read_survey(raw: bytes, filename: str) -> Any:
    """The survey rows (`ts,scanner,emitter,rssi,x,y[,zone]`), or SurveyError saying why not."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "survey.csv"
        path.write_bytes(raw)
        try:
            survey = load_readings(path, positions=True)
        except VenueFileError as e:
            # The positioning reader names the file it read: name the one the installer chose.
            raise SurveyError("survey_bad_file", why=str(e).replace(str(path), filename)) from None
    if survey.empty:
        raise SurveyError("survey_empty")
    return survey


def assess(venue: Venue, survey: Any) -> tuple[dict[str, Any], VenueModel]:
    """Per-zone accuracy of a calibration from this survey, and the calibrated model."""
    scanners = {s.name: (s.x, s.y) for s in venue.scanners}
    zones = {z.name: shape(z.polygon) for z in venue.zones}
    if not zones:
        raise SurveyError("survey_no_zones")
    unknown = sorted(set(survey["scanner"]) - set(scanners))
    if unknown:
        raise SurveyError("survey_unknown_scanners", names=", ".join(unknown[:5]))
    model = VenueModel.calibrate(scanners, zones, survey)
    report = zone_accuracy_report(scanners, zones, survey, {"survey_shift_s": model.survey_shift_s})
    if not report.get("tracks"):
        raise SurveyError("survey_too_short")
    return report, model
