"""Blueprint validation and `manage.py load_blueprints`."""

from __future__ import annotations

import io
import textwrap
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from environments.blueprints import (
    BlueprintInvalid,
    ParametersInvalid,
    parse_blueprint,
    render_components,
    resolve_parameters,
)
from environments.models import AuditEvent, Blueprint, BlueprintVersion
from environments.services import publish_blueprint
from tests.conftest import BLUEPRINTS

GOOD = textwrap.dedent(
    """\
    name: shop
    title: Shop
    purpose: demo
    ttl: {default: 4h, max: 3d}
    parameters:
      - {name: image_tag, type: string, default: "1.4.2", pattern: "^[A-Za-z0-9._-]{1,64}$"}
    components:
      - name: web
        image: "registry.example.com/shop:{{ image_tag }}"
        port: 8080
        resources: {cpu: 250m, memory: 256Mi}
        expose: true
      - name: db
        image: postgres:16
        port: 5432
        resources: {cpu: 500m, memory: 512Mi}
    """
)

# (description, text change, the one error line expected)
BAD = [
    ("bad YAML", lambda t: t + "  - name: [unclosed\n", "shop.yaml: line"),
    ("unknown field", lambda t: t + "colour: blue\n", "shop.yaml: colour: unknown field"),
    (
        "missing field",
        lambda t: t.replace("title: Shop\n", ""),
        "shop.yaml: title: missing required field",
    ),
    (
        "bad blueprint name",
        lambda t: t.replace("name: shop", "name: Shop_Demo"),
        "shop.yaml: name: 'Shop_Demo' is not a valid DNS-1123 label",
    ),
    (
        "bad component name",
        lambda t: t.replace("- name: web", "- name: Web_1"),
        "shop.yaml: components[0].name: 'Web_1' is not a valid DNS-1123 label",
    ),
    (
        "bad quantity",
        lambda t: t.replace("cpu: 250m", "cpu: 2 cores"),
        "shop.yaml: components[0].resources.cpu: '2 cores' is not a valid Kubernetes quantity",
    ),
    (
        "default fails its own pattern",
        lambda t: t.replace('default: "1.4.2"', 'default: "bad tag!"'),
        "shop.yaml: parameters[0].default: 'bad tag!' does not match the pattern",
    ),
    (
        "duplicate component names",
        lambda t: t.replace("- name: db", "- name: web"),
        "shop.yaml: components[1].name: 'web' is used by another component",
    ),
    (
        "placeholder names no parameter",
        lambda t: t.replace("{{ image_tag }}", "{{ version }}"),
        "shop.yaml: components[0].image: placeholder {{ version }} names no declared parameter",
    ),
    (
        "ttl default longer than max",
        lambda t: t.replace("{default: 4h, max: 3d}", "{default: 4d, max: 3d}"),
        "shop.yaml: ttl.default: 4d is longer than ttl.max 3d",
    ),
    (
        "unknown purpose",
        lambda t: t.replace("purpose: demo", "purpose: party"),
        "shop.yaml: purpose: 'party' is not one of demo, training, hotfix, preview, benchmark, e2e",
    ),
    (
        "bad image",
        lambda t: t.replace("postgres:16", "Postgres:16 latest"),
        "shop.yaml: components[1].image: 'Postgres:16 latest' is not a valid image reference",
    ),
    (
        "quota smaller than the components",
        lambda t: t + 'quota: {cpu: 500m, memory: 4Gi, pods: "10"}\n',
        "shop.yaml: quota.cpu: components request 0.75 CPU, more than 500m",
    ),
    (
        "bad ttl",
        lambda t: t.replace("max: 3d", "max: forever"),
        "shop.yaml: ttl.max: 'forever' is not a duration like 30m, 4h or 3d",
    ),
]


def test_it_accepts_the_good_blueprint():
    spec = parse_blueprint(GOOD)
    assert spec["name"] == "shop"
    assert spec["ttl"] == {"default": 4 * 3600, "max": 3 * 86400}
    assert spec["components"][0]["cpu_millicores"] == 250
    assert spec["components"][1]["memory_bytes"] == 512 * 1024**2


@pytest.mark.parametrize(("description", "change", "expected"), BAD, ids=[b[0] for b in BAD])
def test_it_rejects_bad_input_with_a_one_line_error(db, tmp_path, description, change, expected):
    path = tmp_path / "shop.yaml"
    path.write_text(change(GOOD))
    with pytest.raises(BlueprintInvalid) as excinfo:
        parse_blueprint(path.read_text())
    lines = excinfo.value.lines("shop.yaml")
    assert len(lines) == 1, lines
    assert lines[0].startswith(expected), lines[0]
    assert "\n" not in lines[0]

    # The command prints the same line and writes nothing.
    with pytest.raises(CommandError, match="nothing was published"):
        call_command("load_blueprints", str(path))
    assert Blueprint.objects.count() == 0
    assert BlueprintVersion.objects.count() == 0


def test_it_prints_the_error_line_from_the_command(db, tmp_path, capsys):
    (tmp_path / "shop.yaml").write_text(GOOD.replace("- name: web", "- name: Web_1"))
    with pytest.raises(CommandError):
        call_command("load_blueprints", str(tmp_path))
    err = capsys.readouterr().err
    assert "shop.yaml: components[0].name: 'Web_1' is not a valid DNS-1123 label" in err


def test_it_writes_nothing_when_one_file_of_many_is_bad(db, tmp_path):
    (tmp_path / "a-good.yaml").write_text(GOOD)
    (tmp_path / "b-bad.yaml").write_text(GOOD.replace("name: shop", "name: shop2") + "x: 1\n")
    with pytest.raises(CommandError):
        call_command("load_blueprints", str(tmp_path))
    assert Blueprint.objects.count() == 0


def test_it_publishes_a_new_version_only_when_the_content_changes(db, tmp_path):
    path = tmp_path / "shop.yaml"
    path.write_text(GOOD)
    call_command("load_blueprints", str(path))
    call_command("load_blueprints", str(path))
    assert BlueprintVersion.objects.count() == 1

    path.write_text(GOOD.replace("port: 8080", "port: 8081"))
    call_command("load_blueprints", str(path))
    versions = list(BlueprintVersion.objects.order_by("number").values_list("number", flat=True))
    assert versions == [1, 2]
    assert AuditEvent.objects.filter(action="blueprint.publish").count() == 2


def test_a_restart_does_not_replace_a_version_published_in_the_portal(db, tmp_path):
    # make run loads deploy/blueprints/ at every start: an admin's newer version stays.
    path = tmp_path / "shop.yaml"
    path.write_text(GOOD)
    call_command("load_blueprints", str(path))
    publish_blueprint(source=GOOD.replace("port: 8080", "port: 9090"))
    out = io.StringIO()
    call_command("load_blueprints", str(path), stdout=out)
    assert "shop is v1, already published; v2 (published since) stays current" in out.getvalue()
    assert list(BlueprintVersion.objects.values_list("number", flat=True).order_by("number")) == [
        1,
        2,
    ]


def test_it_loads_every_sample_blueprint(db):
    call_command("load_blueprints", str(BLUEPRINTS))
    purposes = set(Blueprint.objects.values_list("purpose", flat=True))
    assert {"demo", "training", "hotfix", "preview", "benchmark"} <= purposes


def test_it_keeps_versions_immutable(db):
    version, _ = publish_blueprint(source=GOOD)
    version.source = "changed"
    with pytest.raises(ValueError, match="immutable"):
        version.save()
    with pytest.raises(ValueError, match="immutable"):
        BlueprintVersion.objects.filter(pk=version.pk).update(source="x")


def test_it_checks_request_parameters_against_the_blueprint():
    spec = parse_blueprint(GOOD)
    assert resolve_parameters(spec, {}) == {"image_tag": "1.4.2"}
    with pytest.raises(ParametersInvalid) as excinfo:
        resolve_parameters(spec, {"image_tag": "x y", "colour": "red"})
    assert set(excinfo.value.errors) == {"image_tag", "colour"}

    rendered = render_components(spec, {"image_tag": "2.0.0"})
    assert rendered[0]["image"] == "registry.example.com/shop:2.0.0"


def test_it_checks_integer_parameters():
    spec = parse_blueprint((BLUEPRINTS / "training-lab.yaml").read_text())
    assert resolve_parameters(spec, {"seats": "12"})["seats"] == 12
    with pytest.raises(ParametersInvalid, match="more than the maximum 30"):
        resolve_parameters(spec, {"seats": "31"})
    with pytest.raises(ParametersInvalid, match="not a whole number"):
        resolve_parameters(spec, {"seats": "ten"})


def test_it_prices_a_blueprint_from_the_rate_card(settings):
    settings.COST_PER_CPU_HOUR = Decimal("0.04")
    settings.COST_PER_GIB_HOUR = Decimal("0.005")
    version_spec = parse_blueprint(GOOD)
    from environments.costs import hourly_price

    # web: 0.25 CPU + 0.25 GiB; db: 0.5 CPU + 0.5 GiB
    expected = Decimal("0.75") * Decimal("0.04") + Decimal("0.75") * Decimal("0.005")
    assert hourly_price(version_spec) == expected.quantize(Decimal("0.0001"))
