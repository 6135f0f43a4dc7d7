"""Blueprint versions in a real browser (issue 12, defect 7): an admin reads a version's
YAML, edits the current version into a new one, compares the two and deprecates one
after confirming. Writes tests/output/blueprint-diff.png. Only the database is needed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from environments.models import BlueprintVersion
from tests.browser import sign_in

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
]


def test_it_views_edits_diffs_and_deprecates_blueprint_versions(
    live_server, new_page, portal_admin, sample_blueprints, output_dir
):
    current = sample_blueprints["shop-demo"]
    page = new_page()
    sign_in(page, live_server, portal_admin.email)

    # From the list to the current version's YAML, and its download.
    page.goto(f"{live_server.url}/admin-portal/blueprints/")
    row = page.locator(f"#version-{current.pk}")
    row.get_by_role("link", name="View YAML").click()
    expect(page.locator("pre.source")).to_contain_text("name: shop-demo")
    with page.expect_download() as download:
        page.get_by_role("link", name="Download YAML").click()
    assert download.value.suggested_filename == f"shop-demo-v{current.number}.yaml"
    assert Path(download.value.path()).read_text(encoding="utf-8") == current.source

    # Edit from it: the form starts from its YAML; a bad value gets the one-line error.
    page.get_by_role("link", name="Edit into a new version").click()
    source = page.get_by_label("Blueprint YAML")
    expect(source).to_have_value(current.source)
    source.fill(current.source.replace("memory: 128Mi", "memory: lots", 1))
    page.get_by_role("button", name="Validate and publish").click()
    expect(page.locator(".errorlist")).to_contain_text("resources.memory: ")
    edited = current.source.replace("replicas: 1", "replicas: 2", 1)
    assert edited != current.source
    source.fill(edited)
    page.get_by_role("button", name="Validate and publish").click()
    newer = BlueprintVersion.objects.get(blueprint=current.blueprint, number=current.number + 1)
    page.wait_for_url(re.compile(rf"/admin-portal/blueprints/{newer.pk}/$"))
    expect(page.locator(".messages")).to_contain_text(f"Published shop-demo v{newer.number}.")

    # The diff between the two, readable: one removed line, one added.
    page.get_by_role("link", name=f"Changes since v{current.number}").click()
    expect(page.locator("h1")).to_have_text(f"shop-demo: v{current.number} → v{newer.number}")
    expect(page.locator("pre.diff .diff-removed")).to_have_text(["-    replicas: 1"])
    expect(page.locator("pre.diff .diff-added")).to_have_text(["+    replicas: 2"])
    page.screenshot(path=output_dir / "blueprint-diff.png", full_page=True)

    # Deprecating asks first; "Keep it" changes nothing; confirming deprecates.
    page.goto(f"{live_server.url}/admin-portal/blueprints/")
    row = page.locator(f"#version-{newer.pk}")
    row.get_by_role("link", name="Deprecate").click()
    expect(page.locator("h1")).to_have_text(f"Deprecate shop-demo v{newer.number}?")
    page.get_by_role("link", name="Keep it").click()
    newer.refresh_from_db()
    assert not newer.deprecated
    row = page.locator(f"#version-{newer.pk}")
    row.get_by_role("link", name="Deprecate").click()
    page.get_by_role("button", name=f"Deprecate v{newer.number}").click()
    expect(page.locator(".messages")).to_contain_text(f"shop-demo v{newer.number} deprecated.")
    newer.refresh_from_db()
    assert newer.deprecated
