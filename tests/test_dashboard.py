"""The Grafana dashboard (deploy/grafana/modelfleet-dashboard.json, from modelfleet.dashboard): the committed
file matches the builder, parses as Grafana's JSON model, and every panel reads the data source the
`datasource` variable picks. tests/test_slo_alerts_e2e.py runs every query against a real Prometheus."""

import json
import re

import pytest

from conftest import REPO

from modelfleet import dashboard

FILE = REPO / dashboard.FILE


@pytest.fixture(scope="module")
def board() -> dict:
    return json.loads(FILE.read_text())


def test_committed_dashboard_matches_the_builder():
    assert dashboard.main(["--check", "--out", str(FILE)]) == 0, "run `python -m modelfleet.dashboard`"


def test_check_fails_with_a_hint_when_the_file_drifted_or_is_missing(tmp_path, capsys):
    out = tmp_path / "board.json"
    assert dashboard.main(["--out", str(out)]) == 0
    assert dashboard.main(["--check", "--out", str(out)]) == 0
    out.write_text(out.read_text().replace('"schemaVersion": 39', '"schemaVersion": 38'))
    assert dashboard.main(["--check", "--out", str(out)]) == 1
    assert "python -m modelfleet.dashboard" in capsys.readouterr().err
    assert dashboard.main(["--check", "--out", str(tmp_path / "nowhere.json")]) == 1


def test_every_panel_has_a_title_the_datasource_variable_and_a_query(board):
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len(panels) >= 20
    for panel in panels:
        assert panel["title"] and panel["description"], panel
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["refId"], panel["title"]
            assert target["datasource"] == panel["datasource"], panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"]), panel["title"]


def test_template_variables_pick_a_prometheus_and_a_compressed_model(board):
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    assert variables["namespace"]["query"] == "label_values(modelfleet_model_ready, namespace)"
    assert variables["name"]["query"] == 'label_values(modelfleet_model_ready{namespace=~"$namespace"}, name)'
    for name in ("namespace", "name", "model"):
        assert variables[name]["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    # Every variable a query uses is defined (Grafana's own $__... and PromQL's $1 aside).
    used = {m for _, t in dashboard.targets(board) for m in re.findall(r"\$\{?([A-Za-z_]\w*)", t["expr"])}
    assert used - {"__rate_interval"} == set(dashboard.VARIABLES) <= set(variables)


def test_layout_fits_the_grid_with_unique_ids(board):
    assert (board["uid"], board["schemaVersion"]) == ("modelfleet", 39)
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    cells = set()
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))


def test_the_panels_the_slo_review_needs_are_there(board):
    exprs = "\n".join(t["expr"] for _, t in dashboard.targets(board))
    for series in ("modelfleet_model_slo_met", "modelfleet_model_ready", "modelfleet_artifact_accuracy_drop_ratio",
                   "modelfleet_model_slo_max_accuracy_drop_ratio", "modelfleet_artifact_latency_p95_seconds",
                   "modelfleet_model_slo_latency_p95_seconds", "modelfleet_target_chosen_info",
                   "nv_inference_request_summary_us", "nv_inference_request_success", "nv_inference_request_failure",
                   "modelfleet:serving_latency_errors:ratio_rate", "modelfleet:serving_request_errors:ratio_rate",
                   'up{job="modelfleet-operator"}', "modelfleet_reconciles_total", "modelfleet_reconcile_errors_total",
                   "modelfleet_reconcile_duration_seconds_bucket", "modelfleet_jobs_total", "modelfleet_models"):
        assert series in exprs, series
    (chosen,) = [p for p in board["panels"] if p["title"] == "Chosen artifacts"]
    assert chosen["type"] == "table" and chosen["targets"][0]["format"] == "table"


def test_the_edge_fleet_row_shows_devices_rollouts_device_latency_and_halts(board):
    rows = dashboard.row_targets(board)
    assert dashboard.EDGE_ROW in {panel["title"] for panel in board["panels"] if panel["type"] == "row"}
    exprs = "\n".join(t["expr"] for row, _, t in rows if row == dashboard.EDGE_ROW)
    for series in ("modelfleet_fleet_devices{", "modelfleet_rollout_wave", "modelfleet_rollout_devices",
                   "modelfleet_fleet_device_latency_p95_seconds_bucket", "modelfleet_rollout_halted",
                   'modelfleet_gateway_request_duration_seconds_count{job="modelfleet-gateway"}'):
        assert series in exprs, series
    assert "histogram_quantile(0.95" in exprs
    # Every panel follows its row: the rows' queries are the dashboard's queries.
    assert [(title, t) for _, title, t in rows] == dashboard.targets(board)
