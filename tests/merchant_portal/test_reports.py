"""The reports page renders a real weekly bundle from analytics: guarantees in words, a map of
the home areas drawn from GeoJSON as SVG, the taste rows, suggestions and a CSV export."""

from __future__ import annotations

import csv
import re

from merchant_portal.reports import guarantees_in_words
from tests.merchant_portal.conftest import CAR_LOGIN, login


def test_reports_page_draws_one_shape_per_home_area(salon, stored_report):
    page = salon.get("/portal/reports").get_data(as_text=True)
    codes = {a for cell in stored_report["catchment"]["cells"] for a in cell["areas"]}
    drawn = re.findall(r'<path class="area (in|out)" data-area="(\d+)"', page)
    assert sorted(code for _c, code in drawn) == sorted(codes)
    inside = {
        a for c in stored_report["catchment"]["cells"] if c["in_catchment"] for a in c["areas"]
    }
    assert {code for cls, code in drawn if cls == "in"} == inside
    assert "Every published row and area covers at least k = 5 subscribers." in page
    assert "No noise was added" in page
    assert stored_report["suggestions"][0]["title"].replace("'", "&#39;") in page
    assert page.count('data-report="2026-11-09"') == 1


def test_taste_rows_download_as_csv(salon, stored_report):
    resp = salon.get("/portal/reports/2026-11-09.csv")
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    lines = resp.get_data(as_text=True).splitlines()
    # the guarantees come first as `# key: value` lines, then a plain CSV
    assert "# k: 5" in lines and "# noise: none" in lines
    rows = list(csv.DictReader(line for line in lines if not line.startswith("#")))
    assert len(rows) == len(stored_report["taste"])
    assert all(int(r["subscribers"]) >= 5 for r in rows)


def test_another_merchant_sees_none_of_it(client, stored_report):
    login(client, *CAR_LOGIN)
    page = client.get("/portal/reports").get_data(as_text=True)
    assert 'id="reports-empty"' in page and "data-area" not in page
    assert client.get("/portal/reports/2026-11-09.csv").status_code == 404


def test_noise_is_stated_in_words():
    said = guarantees_in_words(
        {"k": 10, "epsilon": 0.5, "delta": 1e-6, "mechanism": "gaussian", "threshold": 23.4}
    )
    assert said == [
        ("rep_k", {"k": 10}),
        ("rep_noise", {"mechanism": "gaussian", "epsilon": "0.5", "delta": "1e-06"}),
        ("rep_threshold", {"threshold": "23.4"}),
    ]
