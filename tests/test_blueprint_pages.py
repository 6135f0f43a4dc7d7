"""Blueprint versions in the browser for admins (issue 12, defect 7): view and download a
version's YAML, edit from it into a new version, compare two versions, and confirm before
deprecating. Everyone else gets 403 (GET and POST) and changes nothing."""

from __future__ import annotations

import pytest

from environments.models import AuditEvent, BlueprintVersion
from tests.test_blueprints import GOOD
from tests.test_governance_pages import governance_state


@pytest.fixture
def two_versions(client, portal_admin):
    client.force_login(portal_admin)
    assert client.post("/admin-portal/blueprints/", {"source": GOOD}).status_code == 302
    newer = GOOD.replace("port: 8080", "port: 9090")
    assert client.post("/admin-portal/blueprints/", {"source": newer}).status_code == 302
    client.logout()
    return BlueprintVersion.objects.get(number=1), BlueprintVersion.objects.get(number=2)


def test_it_shows_and_downloads_a_versions_yaml(client, portal_admin, two_versions):
    v1, _ = two_versions
    client.force_login(portal_admin)
    page = client.get(f"/admin-portal/blueprints/{v1.pk}/").content.decode()
    assert "port: 8080" in page and "Edit into a new version" in page
    listing = client.get("/admin-portal/blueprints/").content.decode()
    assert f"/admin-portal/blueprints/{v1.pk}/" in listing
    download = client.get(f"/admin-portal/blueprints/{v1.pk}/source.yaml")
    assert download.status_code == 200
    assert download["Content-Disposition"] == 'attachment; filename="shop-v1.yaml"'
    assert download.content.decode() == GOOD


def test_it_edits_from_a_version_into_a_new_one(client, portal_admin, two_versions):
    _, v2 = two_versions
    client.force_login(portal_admin)
    form = client.get(f"/admin-portal/blueprints/{v2.pk}/edit/").content.decode()
    assert "port: 9090" in form and "<textarea" in form
    bad = client.post(
        f"/admin-portal/blueprints/{v2.pk}/edit/",
        {"source": v2.source.replace("cpu: 250m", "cpu: lots")},
    )
    assert bad.status_code == 400
    assert "components[0].resources.cpu: " in bad.content.decode()
    assert "cpu: lots" in bad.content.decode()  # what they typed is kept
    assert BlueprintVersion.objects.count() == 2
    renamed = client.post(
        f"/admin-portal/blueprints/{v2.pk}/edit/",
        {"source": v2.source.replace("name: shop", "name: shop2", 1)},
    )
    assert renamed.status_code == 400
    assert (
        "name: &#x27;shop2&#x27; is not &#x27;shop&#x27;: an edit publishes"
        in renamed.content.decode()
    )
    assert BlueprintVersion.objects.count() == 2
    response = client.post(
        f"/admin-portal/blueprints/{v2.pk}/edit/",
        {"source": v2.source.replace("port: 5432", "port: 5433")},
        follow=True,
    )
    v3 = BlueprintVersion.objects.get(number=3)
    assert response.redirect_chain[-1][0] == f"/admin-portal/blueprints/{v3.pk}/"
    assert "Published shop v3." in response.content.decode()
    assert AuditEvent.objects.filter(action="blueprint.publish", after__version=3).exists()
    unchanged = client.post(
        f"/admin-portal/blueprints/{v3.pk}/edit/", {"source": v3.source}, follow=True
    )
    assert "No change" in unchanged.content.decode()
    assert BlueprintVersion.objects.count() == 3


def test_it_diffs_two_versions(client, portal_admin, two_versions):
    client.force_login(portal_admin)
    page = client.get("/admin-portal/blueprints/shop/diff/").content.decode()
    assert "shop: v1 → v2" in page
    assert '<span class="diff-removed">-    port: 8080</span>' in page
    assert '<span class="diff-added">+    port: 9090</span>' in page
    assert "1 line added, 1 removed." in page
    backwards = client.get("/admin-portal/blueprints/shop/diff/?from=2&to=1").content.decode()
    assert '<span class="diff-added">+    port: 8080</span>' in backwards
    same = client.get("/admin-portal/blueprints/shop/diff/?from=2&to=2").content.decode()
    assert "No differences" in same
    assert client.get("/admin-portal/blueprints/shop/diff/?from=7").status_code == 404
    assert client.get("/admin-portal/blueprints/nothing/diff/").status_code == 404


def test_it_asks_before_deprecating(client, portal_admin, two_versions):
    _, v2 = two_versions
    client.force_login(portal_admin)
    listing = client.get("/admin-portal/blueprints/").content.decode()
    # The list links to a confirmation page; it does not deprecate in one click.
    assert f'href="/admin-portal/blueprints/{v2.pk}/deprecate/"' in listing
    confirm = client.get(f"/admin-portal/blueprints/{v2.pk}/deprecate/")
    assert confirm.status_code == 200
    text = confirm.content.decode()
    assert "Deprecate shop v2?" in text and "New requests for shop will use v1." in text
    v2.refresh_from_db()
    assert not v2.deprecated
    client.post(f"/admin-portal/blueprints/{v2.pk}/deprecate/", {"deprecated": "1"})
    v2.refresh_from_db()
    assert v2.deprecated


PAGES = [
    "/admin-portal/blueprints/{pk}/",
    "/admin-portal/blueprints/{pk}/source.yaml",
    "/admin-portal/blueprints/{pk}/edit/",
    "/admin-portal/blueprints/{pk}/deprecate/",
    "/admin-portal/blueprints/shop/diff/",
]


@pytest.mark.parametrize("url", PAGES)
@pytest.mark.parametrize("user_fixture", ["owner", "approver", "outsider"])
def test_it_refuses_blueprint_pages_to_others(request, client, two_versions, user_fixture, url):
    _, v2 = two_versions
    client.force_login(request.getfixturevalue(user_fixture))
    before = governance_state()
    url = url.format(pk=v2.pk)
    assert client.get(url).status_code == 403
    post = {"source": GOOD.replace("port: 5432", "port: 5433"), "deprecated": "1"}
    assert client.post(url, post).status_code in (403, 405)
    assert governance_state() == before


def test_it_sends_anonymous_people_to_sign_in(client, two_versions):
    _, v2 = two_versions
    response = client.get(f"/admin-portal/blueprints/{v2.pk}/source.yaml")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_it_stores_a_browsers_crlf_yaml_with_lf_line_ends(client, portal_admin, two_versions):
    # A textarea posts CRLF; stored as LF, the diff compares the lines that changed only.
    _, v2 = two_versions
    client.force_login(portal_admin)
    crlf = v2.source.replace("port: 5432", "port: 5433").replace("\n", "\r\n")
    client.post(f"/admin-portal/blueprints/{v2.pk}/edit/", {"source": crlf})
    v3 = BlueprintVersion.objects.get(number=3)
    assert "\r" not in v3.source
    page = client.get("/admin-portal/blueprints/shop/diff/").content.decode()
    assert "1 line added, 1 removed." in page
