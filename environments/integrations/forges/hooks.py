"""Checks a repository hook's settings before they are saved (the admin's form uses it),
so a hook that can never work is refused with one line per problem."""

from __future__ import annotations

import re

from environments.integrations.forges import forge_for
from environments.lib import egress
from environments.models import Blueprint, Membership, RepositoryHook

MIN_SECRET_LENGTH = 16
# GitHub and Gitea: owner/name; GitLab: group/subgroup/.../project.
_SEGMENT = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}"
REPOSITORY = re.compile(rf"^{_SEGMENT}/{_SEGMENT}$")
NESTED_REPOSITORY = re.compile(rf"^{_SEGMENT}(/{_SEGMENT})+$")


def problems(
    *,
    forge: str,
    repository: str,
    secret: str,
    blueprint: Blueprint | None,
    sha_parameter: str,
    team_id: int | None,
    owner_id: int | None,
    api_url: str,
    token: str,
    policy: str,
    label: str,
) -> dict[str, str]:
    """Field name -> one-line reason, for every setting that cannot work."""
    found: dict[str, str] = {}
    pattern = NESTED_REPOSITORY if forge == RepositoryHook.Forge.GITLAB else REPOSITORY
    if not pattern.match(repository or "") or ".." in repository or repository.endswith(".git"):
        shape = "group/project" if forge == RepositoryHook.Forge.GITLAB else "owner/name"
        found["repository"] = (
            f"{repository!r} is not a repository name: write it as {shape} "
            "(letters, digits, '.', '-', '_'), without the forge's address or .git"
        )
    if secret is not None and len(secret) < MIN_SECRET_LENGTH:
        found["secret"] = (
            f"The secret is too short: use at least {MIN_SECRET_LENGTH} characters "
            "(for example the output of `openssl rand -hex 32`)."
        )
    if blueprint is not None:
        version = blueprint.current_version()
        if version is None:
            found["blueprint"] = f"Blueprint {blueprint.name} has no version open to requests."
        else:
            names = [p.name for p in version.blueprint_spec.parameters]
            if sha_parameter not in names:
                found["sha_parameter"] = (
                    f"Blueprint {blueprint.name} has no parameter {sha_parameter!r} "
                    f"(it has: {', '.join(names) or 'none'})."
                )
    if (
        team_id is not None
        and owner_id is not None
        and not Membership.objects.filter(team_id=team_id, user_id=owner_id).exists()
    ):
        found["owner"] = "The owner is not a member of the team: environments are billed to it."
    if forge == RepositoryHook.Forge.GITEA and token and not api_url:
        found["api_url"] = (
            "Gitea and Forgejo need their address to post back (https://git.example.com)."
        )
    if api_url:
        refused = egress.refused_url(api_url)
        if refused:
            found["api_url"] = f"Ephemera may not call this address: {refused}."
    if policy == RepositoryHook.Policy.LABEL and not (label or "").strip():
        found["label"] = "The label policy needs a label (for example preview)."
    if (
        policy == RepositoryHook.Policy.ASSOCIATION
        and not forge_for(forge).knows_author_association
    ):
        found["policy"] = (
            f"{forge_for(forge).title} does not say how an author relates to the repository: "
            "use the label policy instead."
        )
    return found
